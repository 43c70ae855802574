//! Sign-in, refresh-token rotation with reuse detection, and sign-out.

use chrono::{DateTime, Duration, Utc};
use entity::users::UserStatus;
use entity::{refresh_tokens, sessions, users};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbBackend, EntityTrait, QueryFilter, Set,
    Statement,
};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::audit::{audit_columns, AuditAction, AuditEvent, MAX_USER_AGENT_CHARS};
use crate::context::{AppContext, RequestMeta};
use crate::domain::Email;
use crate::error::{ServiceError, ServiceResult};
use crate::limits::{self, IpAction};
use crate::passwords::Verification;
use crate::principal::Principal;
use crate::sessions::SessionService;
use crate::tokens::{hash_token, new_refresh_token};
use crate::users::{User, UserService};

/// A refresh records the session's last sign of life (time, IP, user agent) when the IP or user
/// agent changed or the recorded time is at least this old; otherwise it leaves the session row
/// alone. `last_seen_at` is accurate to this much, and a client refreshing every few seconds
/// does not rewrite its session row each time.
pub const LAST_SEEN_GRANULARITY: Duration = Duration::seconds(60);

/// The sign-in's one statement on PostgreSQL (see [`AuthService::open_verified_session`]); its
/// parameters are `$1` now, `$2` the user id, `$3` the password hash verified, `$4` the session
/// id, `$5` its expiry, `$6` IP, `$7` user agent, `$8` the refresh token's id, `$9` its hash,
/// `$10` its expiry, `$11`–`$22` the audit event. Public so the test suite can check its plan.
pub const SIGN_IN_POSTGRES_SQL: &str = concat!(
    r#"
    WITH verified AS (
        UPDATE users SET last_login_at = $1, failed_login_count = 0
        WHERE id = $2 AND password_hash = $3 AND status = 'active' AND deleted_at IS NULL
        RETURNING id
    ), opened AS (
        INSERT INTO sessions (id, user_id, created_at, last_seen_at, expires_at, ip, user_agent, mfa_level)
        SELECT $4, verified.id, $1, $1, $5, $6, $7, 0 FROM verified
        RETURNING id
    ), token AS (
        INSERT INTO refresh_tokens (id, session_id, token_hash, created_at, expires_at)
        SELECT $8, opened.id, $9, $1, $10 FROM opened
        RETURNING id
    ), event AS (
        INSERT INTO audit_events ("#,
    audit_columns!(),
    r#")
        SELECT $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22 FROM token
        RETURNING id
    )
    SELECT (SELECT count(*) FROM event) AS opened"#
);

/// The refresh's one statement on PostgreSQL (see [`AuthService::refresh`]); its parameters are
/// `$1` now, `$2` the presented token's hash, `$3` IP, `$4` user agent, `$5` the successor's id,
/// `$6` its hash, `$7` its expiry, `$8` the oldest `last_seen_at` left alone. `stale` says whether
/// the session's last sign of life should be recorded (the caller does that afterwards, at most
/// once a minute per session, so the session's UPDATE is not part of every refresh's plan).
/// Public so the test suite can check its plan.
pub const REFRESH_POSTGRES_SQL: &str = r#"
    WITH claimed AS (
        UPDATE refresh_tokens SET used_at = $1
        WHERE token_hash = $2 AND used_at IS NULL AND expires_at > $1
        RETURNING id, session_id
    ), live AS (
        SELECT sessions.id, sessions.user_id, sessions.expires_at, sessions.last_seen_at,
               sessions.ip, sessions.user_agent
        FROM sessions
        WHERE sessions.id = (SELECT session_id FROM claimed)
          AND sessions.revoked_at IS NULL AND sessions.expires_at > $1
          AND sessions.user_id IN
              (SELECT id FROM users WHERE status = 'active' AND deleted_at IS NULL)
        FOR SHARE OF sessions
    ), successor AS (
        INSERT INTO refresh_tokens (id, session_id, token_hash, parent_id, created_at, expires_at)
        SELECT $5, live.id, $6, claimed.id, $1, LEAST($7, live.expires_at)
        FROM live CROSS JOIN claimed
        RETURNING id
    )
    SELECT claimed.session_id, live.user_id, (SELECT count(*) FROM successor) AS issued,
           (live.last_seen_at < $8 OR live.ip IS DISTINCT FROM $3
            OR live.user_agent IS DISTINCT FROM $4) AS stale
    FROM claimed LEFT JOIN live ON true"#;

/// What a sign-in with the right password leads to.
pub enum LoginOutcome {
    /// A new session.
    Tokens(IssuedTokens),
    /// The account has a second factor: `POST /v1/auth/mfa/verify` with this challenge opens
    /// the session.
    MfaRequired(crate::mfa::Challenge),
}

impl LoginOutcome {
    /// The session's tokens; an error for an account that needs its second factor.
    pub fn into_tokens(self) -> ServiceResult<IssuedTokens> {
        match self {
            Self::Tokens(tokens) => Ok(tokens),
            Self::MfaRequired(_) => Err(ServiceError::Unauthenticated("mfa_required")),
        }
    }
}

/// What a successful sign-in or refresh hands back. No `Debug`: it holds bearer credentials.
pub struct IssuedTokens {
    pub access_token: String,
    pub refresh_token: SecretString,
    pub expires_in: i64,
    pub session_id: Uuid,
    pub user_id: Uuid,
}

fn clip(value: &Option<String>, max: usize) -> Option<String> {
    value.as_ref().map(|v| v.chars().take(max).collect())
}

pub struct AuthService;

impl AuthService {
    /// Email + password → a new session. Unknown emails cost one dummy verification, so the answer
    /// and its timing are the same as for a wrong password.
    #[tracing::instrument(skip_all)]
    pub async fn login(
        ctx: &AppContext,
        meta: &RequestMeta,
        email: &Email,
        password: &SecretString,
    ) -> ServiceResult<LoginOutcome> {
        // Cheapest refusals first: this client's sign-in rate, its share of the hashing queue,
        // then the account's budget; only then a hash.
        let client = meta.ip_addr();
        if let Some(ip) = client {
            limits::ip_attempt(ctx, IpAction::Login, ip).await?;
        }
        let slot = ctx.hasher.reserve_for(client)?;
        let user = UserService::find_by_email(&ctx.db, email).await?;
        // An unknown address is throttled under a stand-in subject exactly like a real account,
        // so the answers (401, then 429 with the same delays) do not tell them apart.
        let subject = user
            .as_ref()
            .map_or_else(|| limits::unknown_email_subject(email), |u| u.id);
        let stored = user.as_ref().map(|u| u.password_hash.as_str());
        let (_, verdict) = limits::secret_check(ctx, subject, async {
            let verdict = ctx.hasher.verify_in(slot, password, stored).await?;
            Ok((matches!(verdict, Verification::Match { .. }), verdict))
        })
        .await?;
        let (user, needs_rehash) = match (user, verdict) {
            (Some(user), Verification::Match { needs_rehash }) => (user, needs_rehash),
            (user, _) => {
                Self::record_failure(ctx, meta, user.as_ref()).await?;
                return Err(ServiceError::InvalidCredentials);
            }
        };
        if user.status != UserStatus::Active {
            return Err(ServiceError::AccountDisabled);
        }
        if user.mfa_enabled {
            // No rehash here: the challenge is bound to the stored hash as it is.
            let challenge = crate::mfa::MfaService::begin(ctx, &user).await?;
            return Ok(LoginOutcome::MfaRequired(challenge));
        }

        let now = Utc::now();
        let Some((session_id, refresh)) =
            Self::open_verified_session(ctx, meta, &user, now).await?
        else {
            return Err(ServiceError::InvalidCredentials);
        };

        if needs_rehash {
            Self::rehash(ctx, &user, password).await;
        }
        Self::tokens(ctx, user.id, session_id, refresh, now).map(LoginOutcome::Tokens)
    }

    /// Opens the session of a sign-in whose password was verified against `user` as read before
    /// hashing, only if the account is still as it was then: a password change or a disable that
    /// committed while we were hashing wins (on PostgreSQL this waits for its row lock), so no
    /// session can be opened with a password that no longer applies. `None` when that check fails,
    /// and then nothing is written. Records last sign-in, resets the failure count, stores the
    /// session and its first refresh token (as a hash), and audits the sign-in, all or nothing.
    /// It verifies nothing itself: only [`Self::login`] calls it after the password matched `user`
    /// (it is public so that tests can drive the race with a stale row).
    pub async fn open_verified_session(
        ctx: &AppContext,
        meta: &RequestMeta,
        user: &User,
        now: DateTime<Utc>,
    ) -> ServiceResult<Option<(Uuid, SecretString)>> {
        if ctx.db.get_database_backend() == DbBackend::Postgres {
            Self::open_login_postgres(ctx, meta, user, now).await
        } else {
            Self::open_login(ctx, meta, user, now).await
        }
    }

    /// The portable path: BEGIN, the conditional user update, session, refresh token, audit
    /// event, COMMIT.
    async fn open_login(
        ctx: &AppContext,
        meta: &RequestMeta,
        user: &User,
        now: DateTime<Utc>,
    ) -> ServiceResult<Option<(Uuid, SecretString)>> {
        let txn = crate::db::begin_write(&ctx.db).await?;
        let still_valid = users::Entity::update_many()
            .col_expr(users::Column::LastLoginAt, Expr::value(now))
            .col_expr(users::Column::FailedLoginCount, Expr::value(0))
            .filter(users::Column::Id.eq(user.id))
            .filter(users::Column::PasswordHash.eq(user.password_hash.clone()))
            .filter(users::Column::Status.eq(UserStatus::Active))
            .filter(users::Column::DeletedAt.is_null())
            .exec(&txn)
            .await?;
        if still_valid.rows_affected == 0 {
            txn.rollback().await?;
            return Ok(None);
        }
        let (session_id, refresh) = Self::open_session(&txn, ctx, meta, user.id, now, 0).await?;
        Self::login_event(user.id, session_id)
            .record(&txn, meta)
            .await?;
        txn.commit().await?;
        Ok(Some((session_id, refresh)))
    }

    /// The same as [`Self::open_login`] in one statement (PostgreSQL's data-modifying CTEs): one
    /// round trip and one commit instead of six. The session, its refresh token and the audit
    /// event are inserted only from the row the conditional update returned, so a sign-in that
    /// lost the race writes nothing.
    async fn open_login_postgres(
        ctx: &AppContext,
        meta: &RequestMeta,
        user: &User,
        now: DateTime<Utc>,
    ) -> ServiceResult<Option<(Uuid, SecretString)>> {
        let session_id = Uuid::now_v7();
        let expires_at = now + Duration::seconds(ctx.settings.auth.session_ttl_secs);
        let refresh = new_refresh_token();
        let mut values: Vec<sea_orm::Value> = vec![
            now.into(),
            user.id.into(),
            user.password_hash.clone().into(),
            session_id.into(),
            expires_at.into(),
            meta.ip.clone().into(),
            clip(&meta.user_agent, MAX_USER_AGENT_CHARS).into(),
            Uuid::now_v7().into(),
            hash_token(refresh.expose_secret()).into(),
            Self::refresh_expiry(ctx, now, expires_at).into(),
        ];
        values.extend(Self::login_event(user.id, session_id).into_values(meta));
        let row = Self::postgres_one(ctx, SIGN_IN_POSTGRES_SQL, values)
            .await?
            .ok_or_else(|| ServiceError::unexpected_msg("sign-in statement returned no row"))?;
        let opened: i64 = row.try_get("", "opened")?;
        Ok((opened == 1).then_some((session_id, refresh)))
    }

    /// Runs one of the single-statement PostgreSQL paths; its one result row, if any.
    async fn postgres_one(
        ctx: &AppContext,
        sql: &str,
        values: impl IntoIterator<Item = sea_orm::Value>,
    ) -> ServiceResult<Option<sea_orm::QueryResult>> {
        let statement = Statement::from_sql_and_values(DbBackend::Postgres, sql, values);
        Ok(ctx.db.query_one_raw(statement).await?)
    }

    fn login_event(user_id: Uuid, session_id: Uuid) -> AuditEvent {
        AuditEvent::new(AuditAction::LoginSucceeded)
            .actor(user_id, Some(session_id))
            .target("session", session_id)
    }

    /// A refresh token lives `refresh_token_ttl_secs`, never past its session.
    fn refresh_expiry(
        ctx: &AppContext,
        now: DateTime<Utc>,
        session_expires_at: DateTime<Utc>,
    ) -> DateTime<Utc> {
        std::cmp::min(
            now + Duration::seconds(ctx.settings.auth.refresh_token_ttl_secs),
            session_expires_at,
        )
    }

    /// Single-use rotation: the presented token is consumed atomically and a new one issued in the
    /// same transaction. A token that was already used revokes its whole session.
    #[tracing::instrument(skip_all)]
    pub async fn refresh(
        ctx: &AppContext,
        meta: &RequestMeta,
        presented: &SecretString,
    ) -> ServiceResult<IssuedTokens> {
        let hash = hash_token(presented.expose_secret());
        let now = ctx.clock.now();
        if ctx.db.get_database_backend() == DbBackend::Postgres {
            return Self::refresh_postgres(ctx, meta, &hash, now).await;
        }

        // BEGIN, claim the token, find the session if it is live and its user active, touch it
        // if its last sign of life is stale, store the successor, COMMIT. The claim is the atomic
        // step that makes a token single use.
        let txn = crate::db::begin_write(&ctx.db).await?;
        let claimed = refresh_tokens::Entity::update_many()
            .col_expr(refresh_tokens::Column::UsedAt, Expr::value(now))
            .filter(refresh_tokens::Column::TokenHash.eq(hash.clone()))
            .filter(refresh_tokens::Column::UsedAt.is_null())
            .filter(refresh_tokens::Column::ExpiresAt.gt(now))
            .exec_with_returning(&txn)
            .await?;
        let Some(token) = claimed.into_iter().next() else {
            txn.rollback().await?;
            return Self::refresh_refused(ctx, meta, &hash, now).await;
        };
        let session = live_session_of_active_user(&txn, token.session_id, now).await?;
        let Some(session) = session else {
            // The token stays consumed either way; find out which refusal applies.
            let refusal = Self::dead_session(&txn, ctx, token.session_id, now).await?;
            txn.commit().await?;
            return Err(refusal);
        };
        let user_agent = clip(&meta.user_agent, MAX_USER_AGENT_CHARS);
        if session.last_seen_at < now - LAST_SEEN_GRANULARITY
            || session.ip != meta.ip
            || session.user_agent != user_agent
        {
            Self::touch_session(&txn, meta, user_agent, session.id, now).await?;
        }

        let refresh = new_refresh_token();
        Self::insert_refresh(
            &txn,
            ctx,
            session.id,
            Some(token.id),
            &refresh,
            now,
            session.expires_at,
        )
        .await?;
        txn.commit().await?;
        Self::tokens(ctx, session.user_id, session.id, refresh, now)
    }

    /// The same rotation as the portable path in one statement (PostgreSQL's data-modifying CTEs):
    /// one round trip and one commit instead of five. The session's last sign of life is recorded
    /// by a second statement, only when the first says it is stale (at most once a minute per
    /// session unless its IP or user agent changes): as part of the one statement, the executor
    /// set up that UPDATE on every refresh, a few percent of PostgreSQL's CPU per refresh (see
    /// `bench/experiments/pg-refresh.sh`). Row locks on the claimed token make concurrent
    /// presentations of one token serialize exactly as in the transaction. The live
    /// session is read `FOR SHARE`: a revocation (an UPDATE of that row) committing meanwhile is
    /// waited for and re-checked, so no refresh succeeds after a revocation has committed; the
    /// successor's foreign-key check locks that row anyway, so this adds no row version. The
    /// session is found by a scalar subquery on its primary key: joined to the `claimed` CTE
    /// instead, the planner (which cannot see that the CTE holds at most one row) chose a
    /// sequential scan of every session on each refresh.
    async fn refresh_postgres(
        ctx: &AppContext,
        meta: &RequestMeta,
        hash: &str,
        now: DateTime<Utc>,
    ) -> ServiceResult<IssuedTokens> {
        let refresh = new_refresh_token();
        let refresh_expiry = now + Duration::seconds(ctx.settings.auth.refresh_token_ttl_secs);
        let values: [sea_orm::Value; 8] = [
            now.into(),
            hash.to_owned().into(),
            meta.ip.clone().into(),
            clip(&meta.user_agent, MAX_USER_AGENT_CHARS).into(),
            Uuid::now_v7().into(),
            hash_token(refresh.expose_secret()).into(),
            refresh_expiry.into(),
            (now - LAST_SEEN_GRANULARITY).into(),
        ];
        let row = Self::postgres_one(ctx, REFRESH_POSTGRES_SQL, values).await?;
        let Some(row) = row else {
            return Self::refresh_refused(ctx, meta, hash, now).await;
        };
        let session_id: Uuid = row.try_get("", "session_id")?;
        let user_id: Option<Uuid> = row.try_get("", "user_id")?;
        let issued: i64 = row.try_get("", "issued")?;
        match user_id {
            Some(user_id) if issued == 1 => {
                let stale: Option<bool> = row.try_get("", "stale")?;
                if stale == Some(true) {
                    // The rotation has committed: its tokens are the client's now, whatever
                    // happens to this bookkeeping.
                    let user_agent = clip(&meta.user_agent, MAX_USER_AGENT_CHARS);
                    let touched =
                        Self::touch_session(&ctx.db, meta, user_agent, session_id, now).await;
                    if let Err(e) = touched {
                        tracing::warn!(error = %e, %session_id, "could not record the session's last sign of life");
                    }
                }
                Self::tokens(ctx, user_id, session_id, refresh, now)
            }
            _ => {
                // Consumed, but its session is dead: say why (and revoke if the user is disabled).
                let txn = crate::db::begin_write(&ctx.db).await?;
                let refusal = Self::dead_session(&txn, ctx, session_id, now).await?;
                txn.commit().await?;
                Err(refusal)
            }
        }
    }

    /// Records a live session's last sign of life: now, the IP it came from and its user agent
    /// (already clipped). A session revoked meanwhile is left as it is.
    async fn touch_session(
        db: &impl ConnectionTrait,
        meta: &RequestMeta,
        user_agent: Option<String>,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> ServiceResult<()> {
        sessions::Entity::update_many()
            .col_expr(sessions::Column::LastSeenAt, Expr::value(now))
            .col_expr(sessions::Column::Ip, Expr::value(meta.ip.clone()))
            .col_expr(sessions::Column::UserAgent, Expr::value(user_agent))
            .filter(sessions::Column::Id.eq(session_id))
            .filter(sessions::Column::RevokedAt.is_null())
            .exec(db)
            .await?;
        Ok(())
    }

    /// Why a session cannot be refreshed: revoked or expired (401), or its user was disabled or
    /// deleted (403, and every session of that user is revoked now).
    async fn dead_session(
        txn: &impl ConnectionTrait,
        ctx: &AppContext,
        session_id: Uuid,
        now: DateTime<Utc>,
    ) -> ServiceResult<ServiceError> {
        let invalid = ServiceError::Unauthenticated("invalid_refresh_token");
        let Some(session) = sessions::Entity::find_by_id(session_id).one(txn).await? else {
            return Ok(invalid);
        };
        if session.revoked_at.is_some() || session.expires_at <= now {
            return Ok(invalid);
        }
        let revoked =
            SessionService::revoke_all_except(txn, session.user_id, None, "user_disabled").await?;
        SessionService::forget_locally(ctx, &revoked);
        Ok(ServiceError::AccountDisabled)
    }

    /// Revokes the caller's current session.
    pub async fn logout(
        ctx: &AppContext,
        meta: &RequestMeta,
        principal: &Principal,
    ) -> ServiceResult<()> {
        match SessionService::revoke(
            ctx,
            meta,
            principal,
            principal.session_id,
            AuditAction::Logout,
        )
        .await
        {
            // Already revoked elsewhere: logging out is still done.
            Err(ServiceError::NotFound | ServiceError::Unauthenticated("session_revoked")) => {
                SessionService::forget_locally(ctx, &[principal.session_id]);
                Ok(())
            }
            other => other,
        }
    }

    /// Why a refresh token could not be claimed; a reused one takes its session down, unless
    /// the refresh-reuse grace applies (see [`Self::within_grace`]).
    async fn refresh_refused(
        ctx: &AppContext,
        meta: &RequestMeta,
        hash: &str,
        now: DateTime<Utc>,
    ) -> ServiceResult<IssuedTokens> {
        let invalid = ServiceError::Unauthenticated("invalid_refresh_token");
        let Some(token) = refresh_tokens::Entity::find()
            .filter(refresh_tokens::Column::TokenHash.eq(hash))
            .one(&ctx.db)
            .await?
        else {
            return Err(invalid);
        };
        let Some(used_at) = token.used_at else {
            return Err(invalid); // expired
        };
        let grace = i64::try_from(ctx.settings.auth.refresh_reuse_grace_secs).unwrap_or(i64::MAX);
        if grace > 0 && now - used_at <= Duration::seconds(grace) {
            if let Some(tokens) = Self::within_grace(ctx, meta, &token, now).await? {
                return Ok(tokens);
            }
        }
        let txn = crate::db::begin_write(&ctx.db).await?;
        let session = sessions::Entity::find_by_id(token.session_id)
            .one(&txn)
            .await?;
        let revoked_now = sessions::Entity::update_many()
            .col_expr(sessions::Column::RevokedAt, Expr::value(Utc::now()))
            .col_expr(
                sessions::Column::RevokedReason,
                Expr::value("refresh_token_reuse"),
            )
            .filter(sessions::Column::Id.eq(token.session_id))
            .filter(sessions::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?
            .rows_affected;
        AuditEvent::new(AuditAction::RefreshTokenReused)
            .actor_opt(session.as_ref().map(|s| s.user_id), Some(token.session_id))
            .target("session", token.session_id)
            .details(serde_json::json!({ "refresh_token_id": token.id, "session_revoked_now": revoked_now > 0 }))
            .record(&txn, meta)
            .await?;
        txn.commit().await?;
        SessionService::forget_locally(ctx, &[token.session_id]);
        tracing::warn!(session_id = %token.session_id, "refresh token reuse detected; session revoked");
        Err(ServiceError::Unauthenticated("refresh_token_reused"))
    }

    /// A spent token presented again within `auth.refresh_reuse_grace_secs`: when its session is
    /// live, the request's user agent is the one the session last recorded (the refresh that
    /// spent the token records it), and the token has not been re-presented before, the client
    /// gets a new pair of the same session (the successor it may never have received stays
    /// valid: two tabs both go on). `None` when any of that fails: then it is reuse as always.
    async fn within_grace(
        ctx: &AppContext,
        meta: &RequestMeta,
        token: &refresh_tokens::Model,
        now: DateTime<Utc>,
    ) -> ServiceResult<Option<IssuedTokens>> {
        use sea_orm::PaginatorTrait;
        let user_agent = clip(&meta.user_agent, MAX_USER_AGENT_CHARS);
        if user_agent.is_none() {
            return Ok(None);
        }
        let txn = crate::db::begin_write(&ctx.db).await?;
        // Lock the spent token's row so that concurrent re-presentations count its successors
        // one after the other: one successor (the original rotation) means none was re-issued.
        refresh_tokens::Entity::update_many()
            .col_expr(
                refresh_tokens::Column::UsedAt,
                Expr::col(refresh_tokens::Column::UsedAt),
            )
            .filter(refresh_tokens::Column::Id.eq(token.id))
            .exec(&txn)
            .await?;
        let successors = refresh_tokens::Entity::find()
            .filter(refresh_tokens::Column::ParentId.eq(token.id))
            .count(&txn)
            .await?;
        let session = live_session_of_active_user(&txn, token.session_id, now).await?;
        let Some(session) = session.filter(|s| successors <= 1 && s.user_agent == user_agent)
        else {
            txn.rollback().await?;
            return Ok(None);
        };
        let refresh = new_refresh_token();
        Self::insert_refresh(
            &txn,
            ctx,
            session.id,
            Some(token.id),
            &refresh,
            now,
            session.expires_at,
        )
        .await?;
        txn.commit().await?;
        tracing::info!(session_id = %session.id, "spent refresh token presented again within the grace; new pair issued");
        Self::tokens(ctx, session.user_id, session.id, refresh, now).map(Some)
    }

    /// Counts and audits a failed sign-in. Unknown emails run the same statements (the counter
    /// update matches no row) so the answer takes as long either way.
    async fn record_failure(
        ctx: &AppContext,
        meta: &RequestMeta,
        user: Option<&User>,
    ) -> ServiceResult<()> {
        let txn = crate::db::begin_write(&ctx.db).await?;
        users::Entity::update_many()
            .col_expr(
                users::Column::FailedLoginCount,
                Expr::col(users::Column::FailedLoginCount).add(1),
            )
            .filter(users::Column::Id.eq(user.map_or(Uuid::nil(), |u| u.id)))
            .exec(&txn)
            .await?;
        let event = match user {
            Some(user) => AuditEvent::new(AuditAction::LoginFailed)
                .target("user", user.id)
                .details(serde_json::json!({ "reason": "wrong_password" })),
            None => AuditEvent::new(AuditAction::LoginFailed)
                .details(serde_json::json!({ "reason": "unknown_email" })),
        };
        event.record(&txn, meta).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Stores a session (`mfa_level` 1 when a second factor was checked) and its first refresh
    /// token.
    pub(crate) async fn open_session(
        conn: &impl ConnectionTrait,
        ctx: &AppContext,
        meta: &RequestMeta,
        user_id: Uuid,
        now: DateTime<Utc>,
        mfa_level: i16,
    ) -> ServiceResult<(Uuid, SecretString)> {
        let session_id = Uuid::now_v7();
        let expires_at = now + Duration::seconds(ctx.settings.auth.session_ttl_secs);
        sessions::ActiveModel {
            id: Set(session_id),
            user_id: Set(user_id),
            created_at: Set(now),
            last_seen_at: Set(now),
            expires_at: Set(expires_at),
            ip: Set(meta.ip.clone()),
            user_agent: Set(clip(&meta.user_agent, MAX_USER_AGENT_CHARS)),
            device: Set(None),
            mfa_level: Set(mfa_level),
            revoked_at: Set(None),
            revoked_reason: Set(None),
        }
        .insert(conn)
        .await?;
        let refresh = new_refresh_token();
        Self::insert_refresh(conn, ctx, session_id, None, &refresh, now, expires_at).await?;
        Ok((session_id, refresh))
    }

    async fn insert_refresh(
        conn: &impl ConnectionTrait,
        ctx: &AppContext,
        session_id: Uuid,
        parent_id: Option<Uuid>,
        token: &SecretString,
        now: DateTime<Utc>,
        session_expires_at: DateTime<Utc>,
    ) -> ServiceResult<()> {
        let expires_at = Self::refresh_expiry(ctx, now, session_expires_at);
        refresh_tokens::ActiveModel {
            id: Set(Uuid::now_v7()),
            session_id: Set(session_id),
            token_hash: Set(hash_token(token.expose_secret())),
            parent_id: Set(parent_id),
            created_at: Set(now),
            expires_at: Set(expires_at),
            used_at: Set(None),
        }
        .insert(conn)
        .await?;
        Ok(())
    }

    pub(crate) fn tokens(
        ctx: &AppContext,
        user_id: Uuid,
        session_id: Uuid,
        refresh_token: SecretString,
        now: DateTime<Utc>,
    ) -> ServiceResult<IssuedTokens> {
        Ok(IssuedTokens {
            access_token: ctx.keys.issue_access(user_id, session_id, now)?,
            refresh_token,
            expires_in: ctx.keys.access_ttl_secs(),
            session_id,
            user_id,
        })
    }

    /// Upgrades a hash made with older parameters; failure only costs a retry on the next login.
    async fn rehash(ctx: &AppContext, user: &User, password: &SecretString) {
        let Ok(parsed) = crate::domain::Password::parse(password, "password") else {
            return; // an old password that today's policy would refuse keeps its old hash
        };
        let Ok(hash) = ctx.hasher.hash(&parsed).await else {
            return;
        };
        let res = users::Entity::update_many()
            .col_expr(users::Column::PasswordHash, Expr::value(hash))
            .filter(users::Column::Id.eq(user.id))
            .filter(users::Column::PasswordHash.eq(user.password_hash.clone()))
            .exec(&ctx.db)
            .await;
        if let Err(err) = res {
            tracing::warn!(error = %err, "password rehash failed");
        }
    }
}

/// The session if it is live and its user active.
async fn live_session_of_active_user(
    conn: &impl ConnectionTrait,
    session_id: Uuid,
    now: DateTime<Utc>,
) -> ServiceResult<Option<sessions::Model>> {
    let active_users = Query::select()
        .column(users::Column::Id)
        .from(users::Entity)
        .and_where(users::Column::Status.eq(UserStatus::Active))
        .and_where(users::Column::DeletedAt.is_null())
        .to_owned();
    Ok(sessions::Entity::find_by_id(session_id)
        .filter(sessions::Column::RevokedAt.is_null())
        .filter(sessions::Column::ExpiresAt.gt(now))
        .filter(sessions::Column::UserId.in_subquery(active_users))
        .one(conn)
        .await?)
}
