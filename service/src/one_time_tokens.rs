//! Mailed single-use tokens: email verification (on register and on request), email change
//! (the address changes once the new one is verified) and password reset. A token is 256
//! random bits that only ever travel in the mail; the database keeps its SHA-256. Each is
//! consumed by one conditional UPDATE (`consumed_at IS NULL AND expires_at > now`), so of any
//! number of concurrent uses exactly one succeeds. Expiries are judged by [`crate::clock::Clock`].

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use entity::{one_time_tokens, users};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, Set};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::audit::{AuditAction, AuditEvent};
use crate::context::{AppContext, RequestMeta};
use crate::domain::{Email, Password};
use crate::error::{is_unique_violation, ServiceError, ServiceResult};
use crate::limits::IpAction;
use crate::mail::{Mail, MailKind, Queued};
use crate::principal::Principal;
use crate::sessions::SessionService;
use crate::tokens::hash_token;
use crate::users::{User, UserService, UserStatus};

/// What a token is for; stored in `one_time_tokens.purpose`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Proves the user's current address.
    EmailVerification,
    /// Proves a new address, which becomes the user's (verified) address.
    EmailChange,
    PasswordReset,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::EmailVerification => "email_verification",
            Self::EmailChange => "email_change",
            Self::PasswordReset => "password_reset",
        }
    }
}

/// The refusal of a verification link, whatever is wrong with it.
const INVALID_VERIFICATION: ServiceError = ServiceError::InvalidToken("invalid_verification_token");
/// The refusal of a reset link, whatever is wrong with it.
const INVALID_RESET: ServiceError = ServiceError::InvalidToken("invalid_reset_token");

/// Spends one of this client's attempts at `action` (429 `rate_limited` beyond the configured
/// limit); a request without a parseable client address is not counted.
async fn limit_client(ctx: &AppContext, meta: &RequestMeta, action: IpAction) -> ServiceResult<()> {
    match meta.ip_addr() {
        Some(ip) => crate::limits::ip_attempt(ctx, action, ip).await,
        None => Ok(()),
    }
}

fn new_token() -> SecretString {
    SecretString::from(URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>()))
}

/// What a reset token is bound to: the password hash it was issued against. Any change of the
/// stored hash (a password change, another reset, an operator's action) makes it useless.
fn binding_of(password_hash: &str) -> String {
    hash_token(password_hash)
}

/// Stores a new token of `purpose` for `user_id` (and `email`, for verifications) inside the
/// caller's transaction; returns it for the mail.
async fn store(
    conn: &impl ConnectionTrait,
    user_id: Uuid,
    purpose: Purpose,
    email: Option<&str>,
    binding: Option<String>,
    now: DateTime<Utc>,
    ttl_secs: i64,
) -> ServiceResult<(SecretString, DateTime<Utc>)> {
    let token = new_token();
    let expires_at = now + Duration::seconds(ttl_secs);
    one_time_tokens::ActiveModel {
        id: Set(Uuid::now_v7()),
        user_id: Set(user_id),
        purpose: Set(purpose.as_str().to_owned()),
        token_hash: Set(hash_token(token.expose_secret())),
        email: Set(email.map(str::to_owned)),
        binding: Set(binding),
        created_at: Set(now),
        expires_at: Set(expires_at),
        consumed_at: Set(None),
    }
    .insert(conn)
    .await?;
    Ok((token, expires_at))
}

/// Consumes the token with this hash if it is of one of `purposes`, unused and unexpired at
/// `now`: the single statement that makes it single use.
async fn claim(
    conn: &impl ConnectionTrait,
    hash: &str,
    purposes: &[Purpose],
    now: DateTime<Utc>,
) -> ServiceResult<Option<one_time_tokens::Model>> {
    let claimed = one_time_tokens::Entity::update_many()
        .col_expr(one_time_tokens::Column::ConsumedAt, Expr::value(now))
        .filter(one_time_tokens::Column::TokenHash.eq(hash))
        .filter(one_time_tokens::Column::Purpose.is_in(purposes.iter().map(|p| p.as_str())))
        .filter(one_time_tokens::Column::ConsumedAt.is_null())
        .filter(one_time_tokens::Column::ExpiresAt.gt(now))
        .exec_with_returning(conn)
        .await?;
    Ok(claimed.into_iter().next())
}

pub struct EmailVerificationService;

impl EmailVerificationService {
    /// Issues a verification of `email` for `user_id` in the caller's transaction and mails the
    /// link `{public_url}/verify-email?token=…` to that address.
    pub async fn issue(
        ctx: &AppContext,
        conn: &impl ConnectionTrait,
        user_id: Uuid,
        email: &str,
        purpose: Purpose,
    ) -> ServiceResult<Queued> {
        let now = ctx.clock.now();
        let ttl = ctx.settings.auth.email_verification_ttl_secs;
        let (token, expires_at) =
            store(conn, user_id, purpose, Some(email), None, now, ttl).await?;
        let link = format!(
            "{}/verify-email?token={}",
            ctx.public_url(),
            token.expose_secret()
        );
        let (kind, subject, why) = match purpose {
            Purpose::EmailChange => (
                MailKind::EmailChange,
                "Confirm your new email address for Tessera",
                "Someone asked to make this the email address of a Tessera account. Open this \
                 link to confirm it; the address changes only then:",
            ),
            _ => (
                MailKind::EmailVerification,
                "Verify your email address for Tessera",
                "Open this link to verify your email address:",
            ),
        };
        ctx.mailer
            .send(
                conn,
                Mail {
                    to: email.to_owned(),
                    kind,
                    subject: subject.to_owned(),
                    body: format!(
                        "{why}\n{link}\n\nThe link works once, until {expires}. If you did not \
                         ask for this, ignore this message.\n",
                        expires = expires_at.to_rfc3339(),
                    ),
                },
            )
            .await
    }

    /// Mails a new verification link for the caller's current address; 409
    /// `email_already_verified` when there is nothing to verify.
    #[tracing::instrument(skip_all, fields(user_id = %principal.user_id))]
    pub async fn resend(
        ctx: &AppContext,
        meta: &RequestMeta,
        principal: &Principal,
    ) -> ServiceResult<()> {
        limit_client(ctx, meta, IpAction::EmailVerification).await?;
        let txn = crate::db::begin_write(&ctx.db).await?;
        SessionService::ensure_live(&txn, principal).await?;
        let user = UserService::get(&txn, principal.user_id).await?;
        if user.email_verified_at.is_some() {
            return Err(ServiceError::Conflict("email_already_verified"));
        }
        let queued =
            Self::issue(ctx, &txn, user.id, &user.email, Purpose::EmailVerification).await?;
        AuditEvent::new(AuditAction::EmailVerificationSent)
            .actor(user.id, Some(principal.session_id))
            .target("user", user.id)
            .record(&txn, meta)
            .await?;
        txn.commit().await?;
        queued.after_commit(&ctx.mailer, &ctx.background);
        Ok(())
    }

    /// Mails a confirmation link to `new_email`; the address changes when it is opened. 409
    /// `email_taken` when another account has that address, 409 `email_unchanged` when it is
    /// the caller's already.
    #[tracing::instrument(skip_all, fields(user_id = %principal.user_id))]
    pub async fn request_change(
        ctx: &AppContext,
        meta: &RequestMeta,
        principal: &Principal,
        new_email: &Email,
    ) -> ServiceResult<()> {
        limit_client(ctx, meta, IpAction::EmailVerification).await?;
        let txn = crate::db::begin_write(&ctx.db).await?;
        SessionService::ensure_live(&txn, principal).await?;
        let user = UserService::get(&txn, principal.user_id).await?;
        if user.email == new_email.as_str() {
            return Err(ServiceError::Conflict("email_unchanged"));
        }
        if UserService::find_by_email(&txn, new_email).await?.is_some() {
            return Err(ServiceError::Conflict("email_taken"));
        }
        let queued =
            Self::issue(ctx, &txn, user.id, new_email.as_str(), Purpose::EmailChange).await?;
        AuditEvent::new(AuditAction::EmailChangeRequested)
            .actor(user.id, Some(principal.session_id))
            .target("user", user.id)
            .details(serde_json::json!({ "new_email": new_email.as_str() }))
            .record(&txn, meta)
            .await?;
        txn.commit().await?;
        queued.after_commit(&ctx.mailer, &ctx.background);
        Ok(())
    }

    /// Uses a verification link: marks the address verified, or for a change makes the new
    /// address the user's (verified). 422 `invalid_verification_token` for an unknown, used or
    /// expired token, or one for an address the account no longer has; 409 `email_taken` when
    /// another account took the new address meanwhile.
    #[tracing::instrument(skip_all)]
    pub async fn verify(
        ctx: &AppContext,
        meta: &RequestMeta,
        token: &SecretString,
    ) -> ServiceResult<User> {
        limit_client(ctx, meta, IpAction::EmailVerification).await?;
        let hash = hash_token(token.expose_secret());
        let now = ctx.clock.now();
        let txn = crate::db::begin_write(&ctx.db).await?;
        let purposes = [Purpose::EmailVerification, Purpose::EmailChange];
        let Some(claimed) = claim(&txn, &hash, &purposes, now).await? else {
            return Err(INVALID_VERIFICATION);
        };
        let Some(email) = claimed.email.clone() else {
            return Err(INVALID_VERIFICATION);
        };
        let user = UserService::get(&txn, claimed.user_id)
            .await
            .map_err(|e| match e {
                ServiceError::NotFound => INVALID_VERIFICATION,
                other => other,
            })?;
        let change = claimed.purpose == Purpose::EmailChange.as_str();
        let mut update = users::Entity::update_many()
            .col_expr(users::Column::EmailVerifiedAt, Expr::value(now))
            .col_expr(
                users::Column::Version,
                Expr::col(users::Column::Version).add(1),
            )
            .col_expr(users::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(users::Column::Id.eq(user.id))
            .filter(users::Column::DeletedAt.is_null());
        if change {
            update = update.col_expr(users::Column::Email, Expr::value(email.clone()));
        } else {
            // A verification of an address the account no longer has proves nothing.
            update = update.filter(users::Column::Email.eq(email.clone()));
        }
        let updated = update.exec(&txn).await.map_err(|e| {
            if is_unique_violation(&e) {
                ServiceError::Conflict("email_taken")
            } else {
                e.into()
            }
        })?;
        if updated.rows_affected == 0 {
            return Err(INVALID_VERIFICATION);
        }
        let (action, details) = if change {
            (
                AuditAction::EmailChanged,
                serde_json::json!({ "old_email": user.email, "new_email": email }),
            )
        } else {
            (
                AuditAction::EmailVerified,
                serde_json::json!({ "email": email }),
            )
        };
        AuditEvent::new(action)
            .actor(user.id, None)
            .target("user", user.id)
            .details(details)
            .record(&txn, meta)
            .await?;
        let user = UserService::get(&txn, user.id).await?;
        txn.commit().await?;
        ctx.users.put(&user);
        Ok(user)
    }

    /// Marks a user's current address verified (`tessera admin verify-email`). Returns whether
    /// it was unverified until now.
    pub async fn verify_by_operator(
        db: &sea_orm::DatabaseConnection,
        email: &Email,
    ) -> ServiceResult<bool> {
        let txn = crate::db::begin_write(db).await?;
        let user = UserService::find_by_email(&txn, email)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let updated = users::Entity::update_many()
            .col_expr(users::Column::EmailVerifiedAt, Expr::value(Utc::now()))
            .col_expr(
                users::Column::Version,
                Expr::col(users::Column::Version).add(1),
            )
            .col_expr(users::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(users::Column::Id.eq(user.id))
            .filter(users::Column::EmailVerifiedAt.is_null())
            .exec(&txn)
            .await?;
        let changed = updated.rows_affected == 1;
        if changed {
            AuditEvent::new(AuditAction::EmailVerified)
                .target("user", user.id)
                .details(serde_json::json!({ "email": user.email, "by": "operator" }))
                .record(&txn, &RequestMeta::default())
                .await?;
        }
        txn.commit().await?;
        Ok(changed)
    }
}

pub struct PasswordResetService;

impl PasswordResetService {
    /// Takes a reset request. The answer is the same whether or not an account has this address
    /// and takes the same time: the lookup, the token and the mail happen in the background
    /// after the answer. Refused only beyond this client's limit (429) or when too much background
    /// work is pending (503): the same for every address.
    pub async fn request(ctx: &AppContext, meta: &RequestMeta, email: Email) -> ServiceResult<()> {
        limit_client(ctx, meta, IpAction::PasswordReset).await?;
        let (task_ctx, meta) = (ctx.clone(), meta.clone());
        ctx.background.try_spawn(async move {
            if let Err(err) = Self::issue(&task_ctx, &meta, &email).await {
                tracing::error!(error = %err, "password reset request failed");
            }
        })
    }

    /// Stores a reset token for the active account with this address, if there is one, and
    /// mails it the link `{public_url}/reset-password?token=…`.
    async fn issue(ctx: &AppContext, meta: &RequestMeta, email: &Email) -> ServiceResult<()> {
        let Some(user) = UserService::find_by_email(&ctx.db, email).await? else {
            return Ok(());
        };
        if user.status != UserStatus::Active {
            return Ok(());
        }
        let txn = crate::db::begin_write(&ctx.db).await?;
        let (token, expires_at) = store(
            &txn,
            user.id,
            Purpose::PasswordReset,
            None,
            Some(binding_of(&user.password_hash)),
            ctx.clock.now(),
            ctx.settings.auth.password_reset_ttl_secs,
        )
        .await?;
        let link = format!(
            "{}/reset-password?token={}",
            ctx.public_url(),
            token.expose_secret()
        );
        let queued = ctx
            .mailer
            .send(
                &txn,
                Mail {
                    to: user.email.clone(),
                    kind: MailKind::PasswordReset,
                    subject: "Reset your Tessera password".to_owned(),
                    body: format!(
                        "Someone asked to reset the password of your Tessera account. Open this \
                         link to choose a new one:\n{link}\n\nThe link works once, until \
                         {expires}, and stops working if your password changes. Resetting signs \
                         you out everywhere. If you did not ask for this, ignore this message: \
                         your password stays as it is.\n",
                        expires = expires_at.to_rfc3339(),
                    ),
                },
            )
            .await?;
        AuditEvent::new(AuditAction::PasswordResetRequested)
            .target("user", user.id)
            .record(&txn, meta)
            .await?;
        txn.commit().await?;
        queued.after_commit(&ctx.mailer, &ctx.background);
        Ok(())
    }

    /// Sets a new password with a reset token and revokes every session (and so every refresh
    /// token) of the user. 422 `invalid_reset_token` for an unknown, used or expired token, or
    /// one issued before the password last changed.
    #[tracing::instrument(skip_all)]
    pub async fn reset(
        ctx: &AppContext,
        meta: &RequestMeta,
        token: &SecretString,
        new: Password,
    ) -> ServiceResult<()> {
        limit_client(ctx, meta, IpAction::PasswordReset).await?;
        let hash = hash_token(token.expose_secret());
        // Cheap refusals before any hashing: the token must look usable now.
        let now = ctx.clock.now();
        let Some(found) = one_time_tokens::Entity::find()
            .filter(one_time_tokens::Column::TokenHash.eq(hash.clone()))
            .filter(one_time_tokens::Column::Purpose.eq(Purpose::PasswordReset.as_str()))
            .filter(one_time_tokens::Column::ConsumedAt.is_null())
            .filter(one_time_tokens::Column::ExpiresAt.gt(now))
            .one(&ctx.db)
            .await?
        else {
            return Err(INVALID_RESET);
        };
        let user = match UserService::get(&ctx.db, found.user_id).await {
            Ok(user) => user,
            Err(ServiceError::NotFound) => return Err(INVALID_RESET),
            Err(other) => return Err(other),
        };
        if found.binding.as_deref() != Some(binding_of(&user.password_hash).as_str()) {
            return Err(INVALID_RESET);
        }
        if user.status != UserStatus::Active {
            return Err(ServiceError::AccountDisabled);
        }
        let password_hash = ctx.hasher.hash(&new).await?;

        let now = ctx.clock.now();
        let txn = crate::db::begin_write(&ctx.db).await?;
        if claim(&txn, &hash, &[Purpose::PasswordReset], now)
            .await?
            .is_none()
        {
            return Err(INVALID_RESET);
        }
        // Only over the password the token was issued against: a change that committed since
        // wins, and the token dies with it (the rollback leaves it bound to a hash that is gone).
        let updated = users::Entity::update_many()
            .col_expr(users::Column::PasswordHash, Expr::value(password_hash))
            .col_expr(
                users::Column::Version,
                Expr::col(users::Column::Version).add(1),
            )
            .col_expr(users::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(users::Column::Id.eq(user.id))
            .filter(users::Column::PasswordHash.eq(user.password_hash.clone()))
            .filter(users::Column::Status.eq(UserStatus::Active))
            .filter(users::Column::DeletedAt.is_null())
            .exec(&txn)
            .await?;
        if updated.rows_affected == 0 {
            return Err(INVALID_RESET);
        }
        let revoked =
            SessionService::revoke_all_except(&txn, user.id, None, "password_reset").await?;
        AuditEvent::new(AuditAction::PasswordReset)
            .actor(user.id, None)
            .target("user", user.id)
            .details(serde_json::json!({ "sessions_revoked": revoked.len() }))
            .record(&txn, meta)
            .await?;
        txn.commit().await?;
        SessionService::forget_locally(ctx, &revoked);
        ctx.users.forget(&user.id);
        Ok(())
    }
}
