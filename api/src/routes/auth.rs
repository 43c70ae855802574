//! `/v1/auth/*`: register, sign in, rotate refresh tokens, sign out.

use actix_web::{post, web, HttpResponse};
use secrecy::ExposeSecret;
use service::auth::AuthService;
use service::domain::{DisplayName, Email, Password};
use service::users::{NewUser, UserService};
use service::{AppContext, ServiceError};

/// Matches `maxLength` of `LoginRequest.password`.
const MAX_LOGIN_PASSWORD_CHARS: usize = 1024;

use service::mfa::{MfaCode, MfaService};
use service::one_time_tokens::{EmailVerificationService, PasswordResetService};

use crate::dto::{
    ForgotPasswordRequest, LoginRequest, LoginResponse, MfaVerifyRequest, RefreshRequest,
    RegisterRequest, ResetPasswordRequest, TokenPair, TokenRequest, UserResponse,
};
use crate::error::{ApiError, Problem};
use crate::request_context::{Authenticated, ClientMeta, SigningOut};
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
/// and the same delays after repeated failures. An account with a second factor gets
/// `{mfa_required, challenge}` instead: the session opens with `POST /v1/auth/mfa/verify`.
#[utoipa::path(
    extensions(("x-required-permission" = json!("public"))),
    tag = "auth",
    responses(
        (status = 200, description = "Signed in (a token pair), or a second factor is needed (`mfa_required`)", body = LoginResponse, links(
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
    let outcome = AuthService::login(&ctx, &meta.0, &email, &body.password).await?;
    Ok(no_store(HttpResponse::Ok()).json(LoginResponse::from(outcome)))
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

/// Verify an email address with the token from the mailed link.
///
/// The link (`{public_url}/verify-email?token=…`) comes on registration, on request
/// (`/v1/auth/email/resend`) and, for a new address, from `POST /v1/me/email`: then the account's
/// address changes now. Each token works once.
#[utoipa::path(
    extensions(("x-required-permission" = json!("public"))),
    tag = "auth",
    responses(
        (status = 204, description = "The address is verified (and is now the account's, for a change)"),
        (status = 409, description = "Another account took the new address meanwhile (`email_taken`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Unknown, used or expired token, or one for an address the account no longer has (`invalid_verification_token`)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts from this client (`rate_limited`); see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/auth/email/verify")]
pub async fn verify_email(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    body: web::Json<TokenRequest>,
) -> Result<HttpResponse, ApiError> {
    let user = EmailVerificationService::verify(&ctx, &meta.0, &body.token).await?;
    tracing::debug!(user_id = %user.id, "email verified");
    Ok(HttpResponse::NoContent().finish())
}

/// Mail a new verification link for the signed-in user's address.
#[utoipa::path(
    extensions(("x-required-permission" = json!("authenticated"))),
    tag = "auth",
    security(("bearer" = [])),
    responses(
        (status = 202, description = "A new link is on its way"),
        (status = 401, description = "Missing or invalid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The account no longer exists", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The address is verified already (`email_already_verified`)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts from this client (`rate_limited`); see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/auth/email/resend")]
pub async fn resend_verification(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    EmailVerificationService::resend(&ctx, &meta.0, &auth.0).await?;
    Ok(HttpResponse::Accepted().finish())
}

/// Ask for a password reset link.
///
/// The answer is the same, byte for byte, whether or not an account has this address: if one
/// does, a link (`{public_url}/reset-password?token=…`) is mailed to it.
#[utoipa::path(
    extensions(("x-required-permission" = json!("public"))),
    tag = "auth",
    responses(
        (status = 202, description = "Taken; a link goes out if an active account has this address"),
        (status = 422, description = "Malformed email", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts from this client (`rate_limited`); see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/auth/password/forgot")]
pub async fn forgot_password(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    body: web::Json<ForgotPasswordRequest>,
) -> Result<HttpResponse, ApiError> {
    let email = Email::parse(&body.email)?;
    PasswordResetService::request(&ctx, &meta.0, email).await?;
    Ok(HttpResponse::Accepted().finish())
}

/// Set a new password with the token from a reset link.
///
/// Signs the user out everywhere: every session and refresh token is revoked. The token works
/// once, expires, and stops working when the password changes by any other way.
#[utoipa::path(
    extensions(("x-required-permission" = json!("public"))),
    tag = "auth",
    responses(
        (status = 204, description = "Password set; every session revoked"),
        (status = 403, description = "Account disabled (`account_disabled`)", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Unknown, used or expired token, or one issued before the password last changed (`invalid_reset_token`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A new password the policy rejects (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts from this client (`rate_limited`); see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/auth/password/reset")]
pub async fn reset_password(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    body: web::Json<ResetPasswordRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let new = Password::parse(&body.new_password, "new_password")?;
    PasswordResetService::reset(&ctx, &meta.0, &body.token, new).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Complete a sign-in with a second factor.
///
/// `code` is the 6 digits from the authenticator app or a recovery code; each is accepted once.
/// A wrong code leaves the challenge usable until it expires (5 minutes by default), within the
/// account's budget of failed checks.
#[utoipa::path(
    extensions(("x-required-permission" = json!("public"))),
    tag = "auth",
    responses(
        (status = 200, description = "Signed in", body = TokenPair),
        (status = 401, description = "Unknown, used or expired challenge (`invalid_mfa_challenge`), or a wrong or already used code (`invalid_mfa_code`)", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Account disabled (`account_disabled`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a code (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The account's budget of failed checks is spent (`rate_limited`); see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/auth/mfa/verify")]
pub async fn verify_mfa(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    body: web::Json<MfaVerifyRequest>,
) -> Result<HttpResponse, ApiError> {
    let code = MfaCode::parse(&body.code)?;
    let tokens = MfaService::verify(&ctx, &meta.0, &body.challenge, &code).await?;
    Ok(no_store(HttpResponse::Ok()).json(TokenPair::from(tokens)))
}

/// Token responses must not be cached by anything on the way.
fn no_store(mut builder: actix_web::HttpResponseBuilder) -> actix_web::HttpResponseBuilder {
    builder.insert_header((actix_web::http::header::CACHE_CONTROL, "no-store"));
    builder
}
