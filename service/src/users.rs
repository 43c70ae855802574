//! Users: registration, profile reads and optimistic-locked updates, password changes.

use chrono::Utc;
use entity::audit_events;
use entity::users;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QuerySelect, Set,
};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::audit::{AuditAction, AuditEvent};
use crate::context::{AppContext, RequestMeta};
use crate::domain::{DisplayName, Email, Password};
use crate::error::{is_unique_violation, ServiceError, ServiceResult};
use crate::passwords::Verification;
use crate::principal::Principal;

pub use users::{Model as User, UserStatus};

/// A registration request that has passed parsing.
#[derive(Debug)]
pub struct NewUser {
    pub email: Email,
    pub password: Password,
    pub display_name: DisplayName,
}

/// The changes a user may make to their own profile; `None` leaves a field alone.
#[derive(Debug, Default)]
pub struct ProfilePatch {
    pub display_name: Option<DisplayName>,
    pub metadata: Option<serde_json::Value>,
}

/// `metadata` is a flat map of string keys to string values (as Stripe's metadata), so it is
/// describable exactly in the API schema and storable identically on SQLite and PostgreSQL.
pub const MAX_METADATA_KEYS: usize = 20;
pub const MAX_METADATA_KEY_CHARS: usize = 40;
pub const MAX_METADATA_VALUE_CHARS: usize = 500;

pub fn parse_metadata(value: serde_json::Value) -> ServiceResult<serde_json::Value> {
    let invalid = |msg: String| ServiceError::validation("metadata", "invalid_metadata", msg);
    let Some(map) = value.as_object() else {
        return Err(invalid("metadata must be a JSON object".into()));
    };
    if map.len() > MAX_METADATA_KEYS {
        return Err(invalid(format!(
            "metadata may have at most {MAX_METADATA_KEYS} keys"
        )));
    }
    for (key, v) in map {
        let key_chars = key.chars().count();
        if key_chars == 0 || key_chars > MAX_METADATA_KEY_CHARS || key.chars().any(char::is_control)
        {
            return Err(invalid(format!(
                "metadata keys must be 1 to {MAX_METADATA_KEY_CHARS} characters without control characters"
            )));
        }
        let Some(text) = v.as_str() else {
            return Err(invalid("metadata values must be strings".into()));
        };
        // PostgreSQL cannot store U+0000 in jsonb; refuse it on every backend alike.
        if text.chars().count() > MAX_METADATA_VALUE_CHARS || text.contains('\0') {
            return Err(invalid(format!(
                "metadata values must be at most {MAX_METADATA_VALUE_CHARS} characters, without U+0000"
            )));
        }
    }
    Ok(value)
}

pub struct UserService;

impl UserService {
    #[tracing::instrument(skip_all)]
    pub async fn register(
        ctx: &AppContext,
        meta: &RequestMeta,
        new: NewUser,
    ) -> ServiceResult<User> {
        // Cheap refusals before any hashing: this client's registration rate, an address that
        // is taken, and (within this instance) a registration of the same address already
        // running, which is waited for and then decides the answer here too.
        let client = meta.ip_addr();
        if let Some(ip) = client {
            crate::limits::ip_attempt(ctx, crate::limits::IpAction::Register, ip).await?;
        }
        let _pending = ctx.registering.acquire(new.email.as_str()).await;
        if Self::email_taken(&ctx.db, &new.email).await? {
            return Err(ServiceError::Conflict("email_taken"));
        }
        let slot = ctx.hasher.reserve_for(client)?;
        let password_hash = ctx.hasher.hash(&new.password).await?;
        drop(slot);
        let now = Utc::now();
        let id = Uuid::now_v7();
        let txn = crate::db::begin_write(&ctx.db).await?;
        let user = users::ActiveModel {
            id: Set(id),
            email: Set(new.email.into_inner()),
            password_hash: Set(password_hash),
            display_name: Set(new.display_name.into_inner()),
            status: Set(UserStatus::Active),
            email_verified_at: Set(None),
            mfa_enabled: Set(false),
            failed_login_count: Set(0),
            locked_until: Set(None),
            last_login_at: Set(None),
            metadata: Set(serde_json::json!({})),
            version: Set(1),
            created_at: Set(now),
            updated_at: Set(now),
            deleted_at: Set(None),
        }
        .insert(&txn)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                ServiceError::Conflict("email_taken")
            } else {
                e.into()
            }
        })?;
        AuditEvent::new(AuditAction::UserRegistered)
            .actor(id, None)
            .target("user", id)
            .record(&txn, meta)
            .await?;
        let queued = crate::one_time_tokens::EmailVerificationService::issue(
            ctx,
            &txn,
            id,
            &user.email,
            crate::one_time_tokens::Purpose::EmailVerification,
        )
        .await?;
        txn.commit().await?;
        queued.after_commit(&ctx.mailer, &ctx.background);
        Ok(user)
    }

    /// A live (not deleted) user.
    pub async fn get(conn: &impl ConnectionTrait, id: Uuid) -> ServiceResult<User> {
        users::Entity::find_by_id(id)
            .filter(users::Column::DeletedAt.is_null())
            .one(conn)
            .await?
            .ok_or(ServiceError::NotFound)
    }

    /// A live user, served from this instance's short-lived cache when it can be (see
    /// [`crate::context::UserCache`]).
    pub async fn get_cached(ctx: &AppContext, id: Uuid) -> ServiceResult<User> {
        if let Some(cached) = ctx.users.get(&id) {
            if cached.refresh {
                // Served from the cache now; the row read again meanwhile. If the read fails
                // the entry simply expires at its TTL and the next lookup reads the row.
                let (db, users) = (ctx.db.clone(), ctx.users.clone());
                tokio::spawn(async move {
                    let read_started = std::time::Instant::now();
                    if let Ok(user) = Self::get(&db, id).await {
                        users.put_read(&user, read_started);
                    }
                });
            }
            return Ok(cached.user);
        }
        let read_started = std::time::Instant::now();
        let user = Self::get(&ctx.db, id).await?;
        ctx.users.put_read(&user, read_started);
        Ok(user)
    }

    /// Whether any account, deleted or not, holds `email` (the column is unique over all rows).
    async fn email_taken(conn: &impl ConnectionTrait, email: &Email) -> ServiceResult<bool> {
        let found = users::Entity::find()
            .select_only()
            .column(users::Column::Id)
            .filter(users::Column::Email.eq(email.as_str()))
            .into_tuple::<Uuid>()
            .one(conn)
            .await?;
        Ok(found.is_some())
    }

    pub async fn find_by_email(
        conn: &impl ConnectionTrait,
        email: &Email,
    ) -> ServiceResult<Option<User>> {
        Ok(users::Entity::find()
            .filter(users::Column::Email.eq(email.as_str()))
            .filter(users::Column::DeletedAt.is_null())
            .one(conn)
            .await?)
    }

    /// Applies `patch` if the stored version is still `expected_version`; bumps the version.
    #[tracing::instrument(skip(ctx, meta, patch), fields(user_id = %principal.user_id))]
    pub async fn update_profile(
        ctx: &AppContext,
        meta: &RequestMeta,
        principal: &Principal,
        expected_version: Option<i32>,
        patch: ProfilePatch,
    ) -> ServiceResult<User> {
        if patch.display_name.is_none() && patch.metadata.is_none() {
            // Nothing to change (RFC 7396: an empty merge patch): still honour the precondition.
            let read_started = std::time::Instant::now();
            let user = Self::get(&ctx.db, principal.user_id).await?;
            if expected_version.is_some_and(|v| v != user.version) {
                return Err(ServiceError::VersionMismatch);
            }
            ctx.users.put_read(&user, read_started);
            return Ok(user);
        }
        let txn = crate::db::begin_write(&ctx.db).await?;
        crate::sessions::SessionService::ensure_live(&txn, principal).await?;
        let mut update = users::Entity::update_many()
            .col_expr(
                users::Column::Version,
                Expr::col(users::Column::Version).add(1),
            )
            .col_expr(users::Column::UpdatedAt, Expr::value(Utc::now()));
        let mut changed = Vec::new();
        if let Some(name) = patch.display_name {
            update = update.col_expr(users::Column::DisplayName, Expr::value(name.into_inner()));
            changed.push("display_name");
        }
        if let Some(metadata) = patch.metadata {
            update = update.col_expr(users::Column::Metadata, Expr::value(metadata));
            changed.push("metadata");
        }
        let mut update = update
            .filter(users::Column::Id.eq(principal.user_id))
            .filter(users::Column::DeletedAt.is_null());
        if let Some(version) = expected_version {
            update = update.filter(users::Column::Version.eq(version));
        }
        let result = update.exec(&txn).await?;
        if result.rows_affected == 0 {
            // Either gone or changed since the client read it.
            // The client read an old version, maybe from a cache here: drop it.
            ctx.users.forget(&principal.user_id);
            Self::get(&txn, principal.user_id).await?;
            return Err(ServiceError::VersionMismatch);
        }
        AuditEvent::new(AuditAction::ProfileUpdated)
            .actor(principal.user_id, Some(principal.session_id))
            .target("user", principal.user_id)
            .details(serde_json::json!({ "fields": changed }))
            .record(&txn, meta)
            .await?;
        let user = Self::get(&txn, principal.user_id).await?;
        txn.commit().await?;
        ctx.users.put(&user);
        Ok(user)
    }

    /// Changes the password after checking the current one, and revokes every other session.
    #[tracing::instrument(skip_all, fields(user_id = %principal.user_id))]
    pub async fn change_password(
        ctx: &AppContext,
        meta: &RequestMeta,
        principal: &Principal,
        current: &SecretString,
        new: Password,
    ) -> ServiceResult<()> {
        // Cheapest refusals first: a revoked session, then the account's budget (the same one
        // sign-in spends), and only then a hash.
        crate::sessions::SessionService::ensure_live(&ctx.db, principal).await?;
        let user = Self::get(&ctx.db, principal.user_id).await?;
        let slot = ctx.hasher.reserve_for(meta.ip_addr())?;
        let (_, verdict) = crate::limits::secret_check(ctx, user.id, async {
            let verdict = ctx
                .hasher
                .verify_in(slot, current, Some(&user.password_hash))
                .await?;
            Ok((matches!(verdict, Verification::Match { .. }), verdict))
        })
        .await?;
        match verdict {
            Verification::Match { .. } => {}
            Verification::Mismatch => {
                // A stolen access token must not allow silent password guessing: audit each miss.
                let txn = crate::db::begin_write(&ctx.db).await?;
                AuditEvent::new(AuditAction::PasswordChangeFailed)
                    .actor(user.id, Some(principal.session_id))
                    .target("user", user.id)
                    .record(&txn, meta)
                    .await?;
                txn.commit().await?;
                return Err(ServiceError::WrongCurrentPassword);
            }
        }
        // The current password was just verified, so comparing it with the new one in constant
        // time tells whether they are the same without a second Argon2 run.
        if bool::from(
            current
                .expose_secret()
                .as_bytes()
                .ct_eq(new.expose().as_bytes()),
        ) {
            return Err(ServiceError::validation(
                "new_password",
                "password_unchanged",
                "the new password must differ from the current one",
            ));
        }
        let password_hash = ctx.hasher.hash(&new).await?;
        let now = Utc::now();
        let txn = crate::db::begin_write(&ctx.db).await?;
        crate::sessions::SessionService::ensure_live(&txn, principal).await?;
        let result = users::Entity::update_many()
            .col_expr(users::Column::PasswordHash, Expr::value(password_hash))
            .col_expr(
                users::Column::Version,
                Expr::col(users::Column::Version).add(1),
            )
            .col_expr(users::Column::UpdatedAt, Expr::value(now))
            .filter(users::Column::Id.eq(user.id))
            // Two concurrent changes: only the one that saw the latest hash wins.
            .filter(users::Column::PasswordHash.eq(user.password_hash.clone()))
            .exec(&txn)
            .await?;
        if result.rows_affected == 0 {
            return Err(ServiceError::Conflict("password_changed_concurrently"));
        }
        let revoked = crate::sessions::SessionService::revoke_all_except(
            &txn,
            user.id,
            Some(principal.session_id),
            "password_changed",
        )
        .await?;
        AuditEvent::new(AuditAction::PasswordChanged)
            .actor(user.id, Some(principal.session_id))
            .target("user", user.id)
            .details(serde_json::json!({ "sessions_revoked": revoked.len() }))
            .record(&txn, meta)
            .await?;
        txn.commit().await?;
        crate::sessions::SessionService::forget_locally(ctx, &revoked);
        ctx.users.forget(&user.id);
        Ok(())
    }

    /// Sets a user's status (operators); disabling or locking revokes every session. Returns the
    /// revoked session ids, for [`crate::sessions::SessionService::forget_locally`].
    pub async fn set_status(
        db: &sea_orm::DatabaseConnection,
        user_id: Uuid,
        status: UserStatus,
    ) -> ServiceResult<Vec<Uuid>> {
        let txn = crate::db::begin_write(db).await?;
        let result = users::Entity::update_many()
            .col_expr(users::Column::Status, Expr::value(status))
            .col_expr(
                users::Column::Version,
                Expr::col(users::Column::Version).add(1),
            )
            .col_expr(users::Column::UpdatedAt, Expr::value(Utc::now()))
            .filter(users::Column::Id.eq(user_id))
            .filter(users::Column::DeletedAt.is_null())
            .exec(&txn)
            .await?;
        if result.rows_affected == 0 {
            return Err(ServiceError::NotFound);
        }
        AuditEvent::new(AuditAction::StatusChanged)
            .target("user", user_id)
            .details(serde_json::json!({ "status": status }))
            .record(&txn, &RequestMeta::default())
            .await?;
        let mut revoked = Vec::new();
        if status != UserStatus::Active {
            revoked = crate::sessions::SessionService::revoke_all_except(
                &txn,
                user_id,
                None,
                "user_disabled",
            )
            .await?;
        }
        txn.commit().await?;
        Ok(revoked)
    }

    /// The most recent audit events where this user is the actor (newest first).
    pub async fn recent_audit(
        conn: &impl ConnectionTrait,
        user_id: Uuid,
        limit: u64,
    ) -> ServiceResult<Vec<audit_events::Model>> {
        use sea_orm::QueryOrder;
        Ok(audit_events::Entity::find()
            .filter(audit_events::Column::ActorUserId.eq(user_id))
            .order_by_desc(audit_events::Column::CreatedAt)
            .limit(limit)
            .all(conn)
            .await?)
    }
}

/// Registrations in progress on this instance, one lock per address: a second registration of
/// an address waits for the first and then sees it taken (409) without hashing, instead of
/// queueing a hash that can only end in a unique-key violation.
#[derive(Default)]
pub struct PendingRegistrations {
    locks:
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

/// Held while one registration of an address runs; the last holder removes the entry.
pub struct PendingRegistration<'a> {
    owner: &'a PendingRegistrations,
    email: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl PendingRegistrations {
    pub async fn acquire(&self, email: &str) -> PendingRegistration<'_> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(email.to_owned()).or_default().clone()
        };
        PendingRegistration {
            owner: self,
            email: email.to_owned(),
            guard: Some(lock.lock_owned().await),
        }
    }
}

impl Drop for PendingRegistration<'_> {
    fn drop(&mut self) {
        let mut locks = self.owner.locks.lock().unwrap_or_else(|e| e.into_inner());
        self.guard.take();
        // Nobody else holds or waits for it (they clone it under this map lock): forget it.
        if locks
            .get(&self.email)
            .is_some_and(|l| std::sync::Arc::strong_count(l) == 1)
        {
            locks.remove(&self.email);
        }
    }
}
