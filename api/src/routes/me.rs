//! `/v1/me/*`: the caller's own profile, password and sessions.

use actix_web::http::header;
use actix_web::{delete, get, patch, post, web, HttpRequest, HttpResponse};
use secrecy::ExposeSecret;
use service::audit::AuditAction;
use service::domain::{DisplayName, Email, Password};
use service::mfa::{MfaCode, MfaService};
use service::one_time_tokens::EmailVerificationService;
use service::sessions::SessionService;
use service::users::{parse_metadata, ProfilePatch, UserService};
use service::AppContext;
use uuid::Uuid;

use crate::dto::{
    ChangeEmailRequest, ChangePasswordRequest, MfaCodeRequest, RecoveryCodesResponse, RevokedCount,
    SessionList, SessionResponse, TotpCodeRequest, TotpEnrollmentResponse, UpdateMeRequest,
    UserResponse,
};
use crate::error::{ApiError, Problem};
use crate::precondition::expected_version;
use crate::request_context::{Authenticated, ClientMeta};
use crate::validation::all_ok;

fn user_response(user: service::users::User) -> HttpResponse {
    let etag = format!("\"{}\"", user.version);
    HttpResponse::Ok()
        .insert_header((header::ETAG, etag))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(UserResponse::from(user))
}

/// The signed-in user.
#[utoipa::path(
    extensions(("x-required-permission" = json!("authenticated"))),
    tag = "me",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's profile; `ETag` carries the version", body = UserResponse,
            headers(("ETag" = String, description = "Quoted version, for If-Match"))),
        (status = 401, description = "Missing or invalid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The account no longer exists", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/me")]
pub async fn get_me(
    ctx: web::Data<AppContext>,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let user = UserService::get_cached(&ctx, auth.0.user_id).await?;
    Ok(user_response(user))
}

/// Update the signed-in user's profile.
///
/// Optimistic locking: send the `version` you read in the body, or `If-Match: "<version>"`.
#[utoipa::path(
    extensions(("x-required-permission" = json!("authenticated"))),
    tag = "me",
    security(("bearer" = [])),
    params(("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|(W/)?"[1-9][0-9]{0,8}")$"#,
        description = "Quoted version from the ETag, e.g. \"3\"; `*` updates whatever the current version is")),
    responses(
        (status = 200, description = "Updated profile", body = UserResponse,
            headers(("ETag" = String, description = "Quoted new version"))),
        (status = 400, description = "Unparseable If-Match header", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The account no longer exists", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "The profile changed since that version (`version_mismatch`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
        (status = 428, description = "No version given (`precondition_required`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/me")]
pub async fn update_me(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
    req: HttpRequest,
    body: web::Json<UpdateMeRequest>,
) -> Result<HttpResponse, ApiError> {
    let body = body.into_inner();
    let version = expected_version(body.version, req.headers())?;
    let (display_name, metadata) = all_ok((
        body.display_name
            .as_deref()
            .map(DisplayName::parse)
            .transpose(),
        body.metadata.map(parse_metadata).transpose(),
    ))?;
    let patch = ProfilePatch {
        display_name,
        metadata,
    };
    let user = UserService::update_profile(&ctx, &meta.0, &auth.0, version, patch).await?;
    Ok(user_response(user))
}

/// Change the password; every other session is signed out.
#[utoipa::path(
    extensions(("x-required-permission" = json!("authenticated"))),
    tag = "me",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Password changed; other sessions revoked"),
        (status = 401, description = "Missing or invalid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The account no longer exists", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "The current password is wrong (`invalid_current_password`)", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Changed concurrently by another request", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "New password rejected by the policy", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many failed password checks for this account (`rate_limited`)", body = Problem, content_type = "application/problem+json",
            headers(("Retry-After" = u64, description = "Seconds to wait before trying again"))),
    )
)]
#[post("/me/password")]
pub async fn change_password(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
    body: web::Json<ChangePasswordRequest>,
) -> Result<HttpResponse, ApiError> {
    let new = Password::parse(&body.new_password, "new_password")?;
    UserService::change_password(&ctx, &meta.0, &auth.0, &body.current_password, new).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Change the signed-in user's email address.
///
/// A confirmation link goes to the new address; the address changes (verified) only when it is
/// opened (`POST /v1/auth/email/verify`).
#[utoipa::path(
    extensions(("x-required-permission" = json!("authenticated"))),
    tag = "me",
    security(("bearer" = [])),
    responses(
        (status = 202, description = "A confirmation link is on its way to the new address"),
        (status = 401, description = "Missing or invalid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The account no longer exists", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Another account has this address (`email_taken`), or it is yours already (`email_unchanged`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Malformed address", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts from this client (`rate_limited`); see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/me/email")]
pub async fn change_email(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
    body: web::Json<ChangeEmailRequest>,
) -> Result<HttpResponse, ApiError> {
    let email = Email::parse(&body.email)?;
    EmailVerificationService::request_change(&ctx, &meta.0, &auth.0, &email).await?;
    Ok(HttpResponse::Accepted().finish())
}

/// Start a TOTP enrollment: the secret and its `otpauth://` URI, shown only here.
///
/// Add it to an authenticator app, then confirm with a code (`/v1/me/mfa/totp/confirm`). Starting
/// again before confirming replaces the secret.
#[utoipa::path(
    extensions(("x-required-permission" = json!("authenticated"))),
    tag = "me",
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Secret and URI for the app", body = TotpEnrollmentResponse),
        (status = 401, description = "Missing or invalid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The account no longer exists", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "MFA is on already (`mfa_already_enabled`), or the server has no key for secrets (`mfa_not_configured`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/me/mfa/totp")]
pub async fn enroll_totp(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let enrollment = MfaService::enroll(&ctx, &meta.0, &auth.0).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(TotpEnrollmentResponse {
            secret: enrollment.secret.expose_secret().to_owned(),
            otpauth_uri: enrollment.otpauth_uri.expose_secret().to_owned(),
        }))
}

/// Confirm the TOTP enrollment with a code: MFA is on, and the 10 recovery codes are shown once.
#[utoipa::path(
    extensions(("x-required-permission" = json!("authenticated"))),
    tag = "me",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "MFA on; single-use recovery codes", body = RecoveryCodesResponse),
        (status = 401, description = "Missing or invalid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Wrong code (`invalid_mfa_code`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The account no longer exists", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No enrollment started (`mfa_not_enrolled`) or MFA is on already (`mfa_already_enabled`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not 6 digits (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The account's budget of failed checks is spent (`rate_limited`); see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/me/mfa/totp/confirm")]
pub async fn confirm_totp(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
    body: web::Json<TotpCodeRequest>,
) -> Result<HttpResponse, ApiError> {
    let code = MfaCode::parse(&body.code)?;
    let recovery_codes = MfaService::confirm(&ctx, &meta.0, &auth.0, &code).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(RecoveryCodesResponse { recovery_codes }))
}

/// Turn MFA off, with a code from the app or a recovery code.
#[utoipa::path(
    extensions(("x-required-permission" = json!("authenticated"))),
    tag = "me",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "MFA off; the secret and recovery codes are deleted"),
        (status = 401, description = "Missing or invalid access token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Wrong or used code (`invalid_mfa_code`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The account no longer exists", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "MFA is not on (`mfa_not_enabled`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Not a code (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "The account's budget of failed checks is spent (`rate_limited`); see `Retry-After`", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/me/mfa/totp")]
pub async fn disable_totp(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
    body: web::Json<MfaCodeRequest>,
) -> Result<HttpResponse, ApiError> {
    let code = MfaCode::parse(&body.code)?;
    MfaService::disable(&ctx, &meta.0, &auth.0, &code).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The signed-in user's live sessions, newest first.
#[utoipa::path(
    extensions(("x-required-permission" = json!("authenticated"))),
    tag = "me",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Live sessions", body = SessionList),
        (status = 401, description = "Missing or invalid access token", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/me/sessions")]
pub async fn list_sessions(
    ctx: web::Data<AppContext>,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let sessions = SessionService::list(&ctx.db, &auth.0).await?;
    let items = sessions
        .into_iter()
        .map(|s| SessionResponse::from_session(s, auth.0.session_id))
        .collect();
    Ok(HttpResponse::Ok().json(SessionList { items }))
}

/// Revoke every session but the current one.
#[utoipa::path(
    extensions(("x-required-permission" = json!("authenticated"))),
    tag = "me",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "How many sessions were revoked", body = RevokedCount),
        (status = 401, description = "Missing or invalid access token", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/me/sessions")]
pub async fn revoke_other_sessions(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
) -> Result<HttpResponse, ApiError> {
    let revoked = SessionService::revoke_others(&ctx, &meta.0, &auth.0).await?;
    Ok(HttpResponse::Ok().json(RevokedCount { revoked }))
}

/// Revoke one of the signed-in user's sessions (the current one too: that signs out).
#[utoipa::path(
    extensions(("x-required-permission" = json!("authenticated"))),
    tag = "me",
    security(("bearer" = [])),
    params(("session_id" = Uuid, Path, description = "Session id")),
    responses(
        (status = 204, description = "Session revoked"),
        (status = 400, description = "Malformed session id", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "Missing or invalid access token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such live session of yours", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/me/sessions/{session_id}")]
pub async fn revoke_session(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    SessionService::revoke(
        &ctx,
        &meta.0,
        &auth.0,
        path.into_inner(),
        AuditAction::SessionRevoked,
    )
    .await?;
    Ok(HttpResponse::NoContent().finish())
}
