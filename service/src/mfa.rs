//! TOTP second factors (RFC 6238: SHA-1, 6 digits, 30 s, the secret in base32): enrollment,
//! confirmation with a code (which hands out 10 single-use recovery codes, stored hashed),
//! disabling, and the sign-in challenge a password alone no longer completes. Secrets are
//! encrypted at rest (ChaCha20-Poly1305, bound to their user) with configured keys that rotate.
//! A code is accepted once: the factor remembers the newest time step accepted, and accepting
//! one is a single conditional UPDATE, so concurrent uses of one code have one winner.

use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use chrono::{DateTime, Duration, Utc};
use entity::{mfa_challenges, mfa_factors, mfa_recovery_codes, sessions, users};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, DatabaseConnection, EntityTrait,
    QueryFilter, Set, TransactionTrait,
};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Builder, Secret, Totp};
use uuid::Uuid;

use crate::audit::{AuditAction, AuditEvent};
use crate::auth::{AuthService, IssuedTokens};
use crate::config::{Environment, Settings};
use crate::context::{AppContext, RequestMeta};
use crate::error::{ServiceError, ServiceResult};
use crate::limits;
use crate::principal::Principal;
use crate::sessions::SessionService;
use crate::tokens::hash_token;
use crate::users::{User, UserService, UserStatus};

/// How many recovery codes a confirmation hands out.
pub const RECOVERY_CODES: usize = 10;
/// Recovery codes are 10 characters of this alphabet (50 bits), shown as `xxxxx-xxxxx`.
const RECOVERY_ALPHABET: &[u8; 32] = b"abcdefghijkmnpqrstuvwxyz23456789";
const NONCE_BYTES: usize = 12;

/// The keys that encrypt TOTP secrets: the first encrypts, all decrypt. No `Debug`: keys.
pub struct SecretBox {
    keys: Vec<(String, ChaCha20Poly1305)>,
}

impl SecretBox {
    /// The configured keys (`mfa.keys`); without any, a key generated into `data_dir` outside
    /// production, and `None` in production (enrollment is then refused).
    pub fn load(settings: &Settings) -> ServiceResult<Option<Self>> {
        if !settings.mfa.keys.is_empty() {
            let entries: Vec<&str> = settings
                .mfa
                .keys
                .iter()
                .map(|k| k.expose_secret())
                .collect();
            return Self::parse(&entries).map(Some);
        }
        if settings.environment == Environment::Production {
            return Ok(None);
        }
        let path = settings.data_dir.join("mfa-key");
        let entry = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().to_owned(),
            Err(_) => write_new_key(&path)?,
        };
        Self::parse(&[entry.as_str()]).map(Some)
    }

    /// Entries `"<id>:<base64 of 32 bytes>"`.
    pub fn parse(entries: &[&str]) -> ServiceResult<Self> {
        let invalid = || {
            ServiceError::unexpected_msg(
                "mfa.keys: each key is \"<id>:<base64 of 32 random bytes>\" with a unique id",
            )
        };
        let mut keys: Vec<(String, ChaCha20Poly1305)> = Vec::new();
        for entry in entries {
            let (id, key) = entry.split_once(':').ok_or_else(invalid)?;
            let bytes = STANDARD.decode(key.trim()).map_err(|_| invalid())?;
            if id.is_empty() || id.len() > 64 || keys.iter().any(|(k, _)| k == id) {
                return Err(invalid());
            }
            let cipher = ChaCha20Poly1305::new_from_slice(&bytes).map_err(|_| invalid())?;
            keys.push((id.to_owned(), cipher));
        }
        if keys.is_empty() {
            return Err(invalid());
        }
        Ok(Self { keys })
    }

    pub fn active_id(&self) -> &str {
        &self.keys[0].0
    }

    /// Encrypts `secret` for `user_id` with the active key: `(key id, base64(nonce ‖ ct))`.
    pub fn seal(&self, user_id: Uuid, secret: &[u8]) -> ServiceResult<(String, String)> {
        let (id, cipher) = &self.keys[0];
        let nonce_bytes: [u8; NONCE_BYTES] = rand::random();
        let nonce = Nonce::from(nonce_bytes);
        let sealed = cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: secret,
                    aad: user_id.as_bytes(),
                },
            )
            .map_err(|_| ServiceError::unexpected_msg("encrypting a TOTP secret failed"))?;
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&sealed);
        Ok((id.clone(), STANDARD.encode(out)))
    }

    /// Decrypts what [`Self::seal`] made for `user_id` with the key `key_id`.
    pub fn open(&self, key_id: &str, user_id: Uuid, sealed: &str) -> ServiceResult<Vec<u8>> {
        let cipher = self
            .keys
            .iter()
            .find(|(id, _)| id == key_id)
            .map(|(_, c)| c)
            .ok_or_else(|| {
                ServiceError::unexpected_msg(format!(
                    "TOTP secret encrypted with key {key_id:?}, which is not in mfa.keys"
                ))
            })?;
        let bytes = STANDARD
            .decode(sealed)
            .map_err(|_| ServiceError::unexpected_msg("stored TOTP secret is not base64"))?;
        if bytes.len() <= NONCE_BYTES {
            return Err(ServiceError::unexpected_msg(
                "stored TOTP secret is too short",
            ));
        }
        let (nonce, ct) = bytes.split_at(NONCE_BYTES);
        let nonce = Nonce::try_from(nonce)
            .map_err(|_| ServiceError::unexpected_msg("stored TOTP nonce is malformed"))?;
        cipher
            .decrypt(
                &nonce,
                Payload {
                    msg: ct,
                    aad: user_id.as_bytes(),
                },
            )
            .map_err(|_| ServiceError::unexpected_msg("a stored TOTP secret does not decrypt"))
    }
}

fn write_new_key(path: &Path) -> ServiceResult<String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(ServiceError::unexpected)?;
    }
    let id = format!("dev-{}", &hex::encode(rand::random::<[u8; 4]>()));
    let entry = format!("{id}:{}", STANDARD.encode(rand::random::<[u8; 32]>()));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(ServiceError::unexpected)?;
    file.write_all(entry.as_bytes())
        .map_err(ServiceError::unexpected)?;
    tracing::warn!(path = %path.display(), "generated a key for TOTP secrets for development; configure mfa.keys in production");
    Ok(entry)
}

/// A code as the user typed it: six digits from the app, or a recovery code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MfaCode {
    Totp(String),
    Recovery(String),
}

impl MfaCode {
    /// Spaces and dashes are ignored and letters folded; anything else is 422.
    pub fn parse(input: &SecretString) -> ServiceResult<Self> {
        let cleaned: String = input
            .expose_secret()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-'))
            .map(|c| c.to_ascii_lowercase())
            .collect();
        if cleaned.len() == 6 && cleaned.bytes().all(|b| b.is_ascii_digit()) {
            return Ok(Self::Totp(cleaned));
        }
        if cleaned.len() == 10 && cleaned.bytes().all(|b| RECOVERY_ALPHABET.contains(&b)) {
            return Ok(Self::Recovery(cleaned));
        }
        Err(ServiceError::validation(
            "code",
            "invalid_code",
            "a code is the 6 digits from your authenticator app or one of your recovery codes",
        ))
    }
}

/// What an enrollment shows once: the secret (base32) and the `otpauth://` URI for a QR code.
pub struct Enrollment {
    pub secret: SecretString,
    pub otpauth_uri: SecretString,
}

/// A sign-in waiting for its second factor.
pub struct Challenge {
    pub challenge: SecretString,
    pub expires_in: i64,
}

fn totp(ctx: &AppContext, secret: Vec<u8>, account: &str) -> ServiceResult<Totp> {
    Builder::new()
        .with_algorithm(Algorithm::SHA1)
        .with_digits(6)
        .with_step_duration(30)
        .with_skew(1)
        .with_secret(secret)
        .with_account_name(account)
        .with_issuer(Some(ctx.settings.mfa.issuer.as_str()))
        .build()
        .map_err(|e| ServiceError::unexpected_msg(format!("TOTP: {e}")))
}

fn new_recovery_code() -> String {
    let bytes: [u8; 10] = rand::random();
    let chars: String = bytes
        .iter()
        .map(|b| RECOVERY_ALPHABET[(b & 31) as usize] as char)
        .collect();
    chars
}

fn binding_of(password_hash: &str) -> String {
    hash_token(password_hash)
}

fn secret_box(ctx: &AppContext) -> ServiceResult<&SecretBox> {
    ctx.mfa_keys
        .as_deref()
        .ok_or(ServiceError::Conflict("mfa_not_configured"))
}

pub struct MfaService;

impl MfaService {
    /// The step a TOTP code is valid for now (±1 step), checked in constant time.
    fn matching_step(
        ctx: &AppContext,
        factor: &mfa_factors::Model,
        email: &str,
        code: &str,
    ) -> ServiceResult<Option<i64>> {
        let secret =
            secret_box(ctx)?.open(&factor.key_id, factor.user_id, &factor.secret_ciphertext)?;
        let totp = totp(ctx, secret, email)?;
        let now = u64::try_from(ctx.clock.now().timestamp()).unwrap_or(0);
        Ok(totp.check(code, now).map(|step| step as i64))
    }

    /// Accepts `code` for the user's confirmed factor inside the caller's transaction: a TOTP
    /// code of a step newer than any accepted before, or an unused recovery code. `false` when
    /// it is wrong or was used.
    async fn consume_code(
        ctx: &AppContext,
        conn: &impl ConnectionTrait,
        factor: &mfa_factors::Model,
        email: &str,
        code: &MfaCode,
        now: DateTime<Utc>,
    ) -> ServiceResult<bool> {
        match code {
            MfaCode::Totp(digits) => {
                let Some(step) = Self::matching_step(ctx, factor, email, digits)? else {
                    return Ok(false);
                };
                let accepted = mfa_factors::Entity::update_many()
                    .col_expr(mfa_factors::Column::LastUsedStep, Expr::value(step))
                    .filter(mfa_factors::Column::Id.eq(factor.id))
                    .filter(mfa_factors::Column::ConfirmedAt.is_not_null())
                    .filter(
                        Condition::any()
                            .add(mfa_factors::Column::LastUsedStep.is_null())
                            .add(mfa_factors::Column::LastUsedStep.lt(step)),
                    )
                    .exec(conn)
                    .await?;
                Ok(accepted.rows_affected == 1)
            }
            MfaCode::Recovery(code) => {
                let used = mfa_recovery_codes::Entity::update_many()
                    .col_expr(mfa_recovery_codes::Column::UsedAt, Expr::value(now))
                    .filter(mfa_recovery_codes::Column::UserId.eq(factor.user_id))
                    .filter(mfa_recovery_codes::Column::CodeHash.eq(hash_token(code)))
                    .filter(mfa_recovery_codes::Column::UsedAt.is_null())
                    .exec(conn)
                    .await?;
                Ok(used.rows_affected == 1)
            }
        }
    }

    async fn factor_of(
        conn: &impl ConnectionTrait,
        user_id: Uuid,
    ) -> ServiceResult<Option<mfa_factors::Model>> {
        Ok(mfa_factors::Entity::find()
            .filter(mfa_factors::Column::UserId.eq(user_id))
            .one(conn)
            .await?)
    }

    /// Audits a wrong or reused code.
    async fn record_failure(
        ctx: &AppContext,
        meta: &RequestMeta,
        user_id: Uuid,
        session_id: Option<Uuid>,
        step: &'static str,
    ) -> ServiceResult<()> {
        let txn = crate::db::begin_write(&ctx.db).await?;
        AuditEvent::new(AuditAction::MfaCodeRejected)
            .actor(user_id, session_id)
            .target("user", user_id)
            .details(serde_json::json!({ "during": step }))
            .record(&txn, meta)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Starts (or restarts) a TOTP enrollment; 409 `mfa_already_enabled` when a factor is
    /// confirmed. The secret is shown only in this answer.
    #[tracing::instrument(skip_all, fields(user_id = %principal.user_id))]
    pub async fn enroll(
        ctx: &AppContext,
        meta: &RequestMeta,
        principal: &Principal,
    ) -> ServiceResult<Enrollment> {
        let keys = secret_box(ctx)?;
        let txn = crate::db::begin_write(&ctx.db).await?;
        SessionService::ensure_live(&txn, principal).await?;
        let user = UserService::get(&txn, principal.user_id).await?;
        if let Some(existing) = Self::factor_of(&txn, user.id).await? {
            if existing.confirmed_at.is_some() {
                return Err(ServiceError::Conflict("mfa_already_enabled"));
            }
            mfa_factors::Entity::delete_by_id(existing.id)
                .exec(&txn)
                .await?;
        }
        let secret = Secret::generate();
        let bytes = secret.as_bytes().to_vec();
        let (key_id, sealed) = keys.seal(user.id, &bytes)?;
        let totp = totp(ctx, bytes, &user.email)?;
        mfa_factors::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(user.id),
            secret_ciphertext: Set(sealed),
            key_id: Set(key_id),
            confirmed_at: Set(None),
            last_used_step: Set(None),
            created_at: Set(Utc::now()),
        }
        .insert(&txn)
        .await?;
        AuditEvent::new(AuditAction::MfaEnrollmentStarted)
            .actor(user.id, Some(principal.session_id))
            .target("user", user.id)
            .record(&txn, meta)
            .await?;
        txn.commit().await?;
        let uri = totp
            .to_url()
            .map_err(|e| ServiceError::unexpected_msg(format!("otpauth URI: {e}")))?;
        Ok(Enrollment {
            secret: SecretString::from(secret.to_base32()),
            otpauth_uri: SecretString::from(uri),
        })
    }

    /// Confirms the enrollment with a code from the app: MFA is on, the current session counts
    /// as signed in with it, and the 10 recovery codes (shown only here) are returned.
    #[tracing::instrument(skip_all, fields(user_id = %principal.user_id))]
    pub async fn confirm(
        ctx: &AppContext,
        meta: &RequestMeta,
        principal: &Principal,
        code: &MfaCode,
    ) -> ServiceResult<Vec<String>> {
        let MfaCode::Totp(digits) = code else {
            return Err(ServiceError::validation(
                "code",
                "invalid_code",
                "confirm with the 6 digits your authenticator app shows",
            ));
        };
        SessionService::ensure_live(&ctx.db, principal).await?;
        let (_, codes) = limits::secret_check(ctx, principal.user_id, async {
            let codes = Self::confirm_checked(ctx, meta, principal, digits).await?;
            Ok((codes.is_some(), codes))
        })
        .await?;
        match codes {
            Some(codes) => Ok(codes),
            None => {
                Self::record_failure(
                    ctx,
                    meta,
                    principal.user_id,
                    Some(principal.session_id),
                    "confirm",
                )
                .await?;
                Err(ServiceError::Denied("invalid_mfa_code"))
            }
        }
    }

    /// [`Self::confirm`] within the account's budget; `None` for a wrong code.
    async fn confirm_checked(
        ctx: &AppContext,
        meta: &RequestMeta,
        principal: &Principal,
        digits: &str,
    ) -> ServiceResult<Option<Vec<String>>> {
        let txn = crate::db::begin_write(&ctx.db).await?;
        SessionService::ensure_live(&txn, principal).await?;
        let user = UserService::get(&txn, principal.user_id).await?;
        let factor = match Self::factor_of(&txn, user.id).await? {
            None => return Err(ServiceError::Conflict("mfa_not_enrolled")),
            Some(f) if f.confirmed_at.is_some() => {
                return Err(ServiceError::Conflict("mfa_already_enabled"))
            }
            Some(f) => f,
        };
        let Some(step) = Self::matching_step(ctx, &factor, &user.email, digits)? else {
            txn.rollback().await?;
            return Ok(None);
        };
        let now = ctx.clock.now();
        let confirmed = mfa_factors::Entity::update_many()
            .col_expr(mfa_factors::Column::ConfirmedAt, Expr::value(now))
            .col_expr(mfa_factors::Column::LastUsedStep, Expr::value(step))
            .filter(mfa_factors::Column::Id.eq(factor.id))
            .filter(mfa_factors::Column::ConfirmedAt.is_null())
            .exec(&txn)
            .await?;
        if confirmed.rows_affected == 0 {
            return Err(ServiceError::Conflict("concurrent_change"));
        }
        let codes: Vec<String> = (0..RECOVERY_CODES).map(|_| new_recovery_code()).collect();
        mfa_recovery_codes::Entity::delete_many()
            .filter(mfa_recovery_codes::Column::UserId.eq(user.id))
            .exec(&txn)
            .await?;
        mfa_recovery_codes::Entity::insert_many(codes.iter().map(|code| {
            mfa_recovery_codes::ActiveModel {
                id: Set(Uuid::now_v7()),
                user_id: Set(user.id),
                code_hash: Set(hash_token(code)),
                used_at: Set(None),
                created_at: Set(now),
            }
        }))
        .exec(&txn)
        .await?;
        Self::set_mfa_enabled(&txn, user.id, true).await?;
        sessions::Entity::update_many()
            .col_expr(sessions::Column::MfaLevel, Expr::value(1i16))
            .filter(sessions::Column::Id.eq(principal.session_id))
            .exec(&txn)
            .await?;
        AuditEvent::new(AuditAction::MfaEnabled)
            .actor(user.id, Some(principal.session_id))
            .target("user", user.id)
            .record(&txn, meta)
            .await?;
        txn.commit().await?;
        ctx.users.forget(&user.id);
        Ok(Some(
            codes
                .into_iter()
                .map(|c| format!("{}-{}", &c[..5], &c[5..]))
                .collect(),
        ))
    }

    async fn set_mfa_enabled(
        conn: &impl ConnectionTrait,
        user_id: Uuid,
        enabled: bool,
    ) -> ServiceResult<()> {
        users::Entity::update_many()
            .col_expr(users::Column::MfaEnabled, Expr::value(enabled))
            .col_expr(
                users::Column::Version,
                Expr::col(users::Column::Version).add(1),
            )
            .col_expr(users::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(users::Column::Id.eq(user_id))
            .exec(conn)
            .await?;
        Ok(())
    }

    /// Turns MFA off with a current code or a recovery code; 409 `mfa_not_enabled` without a
    /// confirmed factor, 403 `invalid_mfa_code` for a wrong or used code.
    #[tracing::instrument(skip_all, fields(user_id = %principal.user_id))]
    pub async fn disable(
        ctx: &AppContext,
        meta: &RequestMeta,
        principal: &Principal,
        code: &MfaCode,
    ) -> ServiceResult<()> {
        SessionService::ensure_live(&ctx.db, principal).await?;
        let (disabled, ()) = limits::secret_check(ctx, principal.user_id, async {
            Ok((Self::disable_checked(ctx, meta, principal, code).await?, ()))
        })
        .await?;
        if !disabled {
            Self::record_failure(
                ctx,
                meta,
                principal.user_id,
                Some(principal.session_id),
                "disable",
            )
            .await?;
            return Err(ServiceError::Denied("invalid_mfa_code"));
        }
        Ok(())
    }

    /// [`Self::disable`] within the account's budget; `false` for a wrong or used code.
    async fn disable_checked(
        ctx: &AppContext,
        meta: &RequestMeta,
        principal: &Principal,
        code: &MfaCode,
    ) -> ServiceResult<bool> {
        let txn = crate::db::begin_write(&ctx.db).await?;
        SessionService::ensure_live(&txn, principal).await?;
        let user = UserService::get(&txn, principal.user_id).await?;
        let Some(factor) = Self::factor_of(&txn, user.id)
            .await?
            .filter(|f| f.confirmed_at.is_some())
        else {
            return Err(ServiceError::Conflict("mfa_not_enabled"));
        };
        let now = ctx.clock.now();
        if !Self::consume_code(ctx, &txn, &factor, &user.email, code, now).await? {
            txn.rollback().await?;
            return Ok(false);
        }
        mfa_factors::Entity::delete_by_id(factor.id)
            .exec(&txn)
            .await?;
        mfa_recovery_codes::Entity::delete_many()
            .filter(mfa_recovery_codes::Column::UserId.eq(user.id))
            .exec(&txn)
            .await?;
        Self::set_mfa_enabled(&txn, user.id, false).await?;
        AuditEvent::new(AuditAction::MfaDisabled)
            .actor(user.id, Some(principal.session_id))
            .target("user", user.id)
            .record(&txn, meta)
            .await?;
        txn.commit().await?;
        ctx.users.forget(&user.id);
        Ok(true)
    }

    /// A challenge for a sign-in whose password matched `user` (as read before hashing); it
    /// lives `mfa.challenge_ttl_secs` and dies if the password changes meanwhile.
    pub async fn begin(ctx: &AppContext, user: &User) -> ServiceResult<Challenge> {
        let token = crate::tokens::new_refresh_token();
        let now = ctx.clock.now();
        let ttl = ctx.settings.mfa.challenge_ttl_secs;
        mfa_challenges::ActiveModel {
            id: Set(Uuid::now_v7()),
            user_id: Set(user.id),
            token_hash: Set(hash_token(token.expose_secret())),
            binding: Set(binding_of(&user.password_hash)),
            created_at: Set(now),
            expires_at: Set(now + Duration::seconds(ttl)),
            consumed_at: Set(None),
        }
        .insert(&ctx.db)
        .await?;
        Ok(Challenge {
            challenge: token,
            expires_in: ttl,
        })
    }

    /// Completes a sign-in: the challenge with a TOTP or recovery code opens the session. 401
    /// `invalid_mfa_challenge` for an unknown, used or expired challenge (or one whose password
    /// changed since), 401 `invalid_mfa_code` for a wrong or used code (the challenge stays
    /// usable until it expires).
    #[tracing::instrument(skip_all)]
    pub async fn verify(
        ctx: &AppContext,
        meta: &RequestMeta,
        challenge: &SecretString,
        code: &MfaCode,
    ) -> ServiceResult<IssuedTokens> {
        let invalid = || ServiceError::Unauthenticated("invalid_mfa_challenge");
        let hash = hash_token(challenge.expose_secret());
        let now = ctx.clock.now();
        let Some(found) = mfa_challenges::Entity::find()
            .filter(mfa_challenges::Column::TokenHash.eq(hash))
            .filter(mfa_challenges::Column::ConsumedAt.is_null())
            .filter(mfa_challenges::Column::ExpiresAt.gt(now))
            .one(&ctx.db)
            .await?
        else {
            return Err(invalid());
        };
        let user = match UserService::get(&ctx.db, found.user_id).await {
            Ok(user) => user,
            Err(ServiceError::NotFound) => return Err(invalid()),
            Err(other) => return Err(other),
        };
        let bound = binding_of(&user.password_hash);
        if !bool::from(bound.as_bytes().ct_eq(found.binding.as_bytes())) {
            return Err(invalid());
        }
        if user.status != UserStatus::Active {
            return Err(ServiceError::AccountDisabled);
        }
        let Some(factor) = Self::factor_of(&ctx.db, user.id)
            .await?
            .filter(|f| f.confirmed_at.is_some())
        else {
            return Err(invalid());
        };
        let (_, tokens) = limits::secret_check(ctx, user.id, async {
            let tokens = Self::verify_checked(ctx, meta, &found, &user, &factor, code).await?;
            Ok((tokens.is_some(), tokens))
        })
        .await?;
        match tokens {
            Some(tokens) => Ok(tokens),
            None => {
                Self::record_failure(ctx, meta, user.id, None, "sign_in").await?;
                Err(ServiceError::Unauthenticated("invalid_mfa_code"))
            }
        }
    }

    /// [`Self::verify`] within the account's budget: claims the challenge, accepts the code and
    /// opens the session in one transaction; `None` (and nothing changed) for a wrong code.
    async fn verify_checked(
        ctx: &AppContext,
        meta: &RequestMeta,
        found: &mfa_challenges::Model,
        user: &User,
        factor: &mfa_factors::Model,
        code: &MfaCode,
    ) -> ServiceResult<Option<IssuedTokens>> {
        let invalid = || ServiceError::Unauthenticated("invalid_mfa_challenge");
        let now = ctx.clock.now();
        let real_now = Utc::now();
        let txn = crate::db::begin_write(&ctx.db).await?;
        let claimed = mfa_challenges::Entity::update_many()
            .col_expr(mfa_challenges::Column::ConsumedAt, Expr::value(now))
            .filter(mfa_challenges::Column::Id.eq(found.id))
            .filter(mfa_challenges::Column::ConsumedAt.is_null())
            .filter(mfa_challenges::Column::ExpiresAt.gt(now))
            .exec(&txn)
            .await?;
        if claimed.rows_affected == 0 {
            return Err(invalid());
        }
        if !Self::consume_code(ctx, &txn, factor, &user.email, code, now).await? {
            // The challenge stays usable: only this transaction's claim of it is undone.
            txn.rollback().await?;
            return Ok(None);
        }
        let still_valid = users::Entity::update_many()
            .col_expr(users::Column::LastLoginAt, Expr::value(real_now))
            .col_expr(users::Column::FailedLoginCount, Expr::value(0))
            .filter(users::Column::Id.eq(user.id))
            .filter(users::Column::PasswordHash.eq(user.password_hash.clone()))
            .filter(users::Column::Status.eq(UserStatus::Active))
            .filter(users::Column::DeletedAt.is_null())
            .exec(&txn)
            .await?;
        if still_valid.rows_affected == 0 {
            return Err(invalid());
        }
        let (session_id, refresh) =
            AuthService::open_session(&txn, ctx, meta, user.id, real_now, 1).await?;
        AuditEvent::new(AuditAction::LoginSucceeded)
            .actor(user.id, Some(session_id))
            .target("session", session_id)
            .details(serde_json::json!({ "mfa": true }))
            .record(&txn, meta)
            .await?;
        txn.commit().await?;
        AuthService::tokens(ctx, user.id, session_id, refresh, real_now).map(Some)
    }

    /// Re-encrypts every TOTP secret not under the active key with it (`tessera admin
    /// rotate-mfa-keys`); returns how many. Afterwards the old keys can leave `mfa.keys`.
    pub async fn rotate_keys(db: &DatabaseConnection, keys: &SecretBox) -> ServiceResult<usize> {
        let stale = mfa_factors::Entity::find()
            .filter(mfa_factors::Column::KeyId.ne(keys.active_id()))
            .all(db)
            .await?;
        let mut rotated = 0;
        for factor in stale {
            let secret = keys.open(&factor.key_id, factor.user_id, &factor.secret_ciphertext)?;
            let (key_id, sealed) = keys.seal(factor.user_id, &secret)?;
            let txn = db.begin().await?;
            let updated = mfa_factors::Entity::update_many()
                .col_expr(mfa_factors::Column::SecretCiphertext, Expr::value(sealed))
                .col_expr(mfa_factors::Column::KeyId, Expr::value(key_id))
                .filter(mfa_factors::Column::Id.eq(factor.id))
                .filter(mfa_factors::Column::KeyId.eq(factor.key_id.clone()))
                .exec(&txn)
                .await?;
            txn.commit().await?;
            rotated += updated.rows_affected as usize;
        }
        Ok(rotated)
    }

    /// Whether this session signed in with a second factor.
    pub async fn session_has_mfa(
        conn: &impl ConnectionTrait,
        session_id: Uuid,
    ) -> ServiceResult<bool> {
        let level = sessions::Entity::find_by_id(session_id)
            .one(conn)
            .await?
            .map_or(0, |s| s.mfa_level);
        Ok(level >= 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(id: &str, byte: u8) -> String {
        format!("{id}:{}", STANDARD.encode([byte; 32]))
    }

    #[test]
    fn secrets_round_trip_and_are_bound_to_their_user() {
        let keys = SecretBox::parse(&[&key("a", 1)]).expect("keys");
        let user = Uuid::now_v7();
        let (id, sealed) = keys.seal(user, b"twenty bytes secret!").expect("seal");
        assert_eq!(id, "a");
        assert_eq!(
            keys.open("a", user, &sealed).expect("open"),
            b"twenty bytes secret!"
        );
        assert!(
            keys.open("a", Uuid::now_v7(), &sealed).is_err(),
            "another user's row"
        );
        let other = SecretBox::parse(&[&key("a", 2)]).expect("keys");
        assert!(other.open("a", user, &sealed).is_err(), "another key");
    }

    #[test]
    fn rotation_keys_decrypt_old_secrets_and_encrypt_with_the_first() {
        let old = SecretBox::parse(&[&key("old", 1)]).expect("keys");
        let user = Uuid::now_v7();
        let (_, sealed) = old.seal(user, b"secret").expect("seal");
        let both = SecretBox::parse(&[&key("new", 2), &key("old", 1)]).expect("keys");
        assert_eq!(both.open("old", user, &sealed).expect("open"), b"secret");
        assert_eq!(both.seal(user, b"x").expect("seal").0, "new");
    }

    #[test]
    fn malformed_keys_are_refused() {
        for bad in [
            "nocolon".to_owned(),
            "a:not base64".to_owned(),
            format!("a:{}", STANDARD.encode([1u8; 16])),
            format!(":{}", STANDARD.encode([1u8; 32])),
        ] {
            assert!(SecretBox::parse(&[&bad]).is_err(), "{bad}");
        }
        assert!(
            SecretBox::parse(&[&key("a", 1), &key("a", 2)]).is_err(),
            "duplicate id"
        );
    }

    #[test]
    fn codes_parse() {
        let parse = |s: &str| MfaCode::parse(&SecretString::from(s.to_owned()));
        assert_eq!(
            parse("123 456").expect("totp"),
            MfaCode::Totp("123456".into())
        );
        assert_eq!(
            parse("ABCDE-FGHJK").expect("recovery"),
            MfaCode::Recovery("abcdefghjk".into())
        );
        for bad in ["12345", "1234567", "abcde-fghjl", ""] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let code = new_recovery_code();
        assert_eq!(parse(&code).expect("own"), MfaCode::Recovery(code.clone()));
    }
}
