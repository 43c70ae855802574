//! Sessions: one per sign-in; listing and revoking them.

use chrono::{Duration, Utc};
use entity::sessions;
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use crate::audit::{AuditAction, AuditEvent};
use crate::context::{AppContext, RequestMeta};
use crate::error::{ServiceError, ServiceResult};
use crate::principal::Principal;

pub use sessions::Model as Session;

pub struct SessionService;

impl SessionService {
    /// The caller's live sessions, newest first.
    pub async fn list(
        conn: &impl ConnectionTrait,
        principal: &Principal,
    ) -> ServiceResult<Vec<Session>> {
        Ok(sessions::Entity::find()
            .filter(sessions::Column::UserId.eq(principal.user_id))
            .filter(sessions::Column::RevokedAt.is_null())
            .filter(sessions::Column::ExpiresAt.gt(Utc::now()))
            .order_by_desc(sessions::Column::CreatedAt)
            .all(conn)
            .await?)
    }

    /// Fails with 401 `session_revoked` unless the caller's session is live in the database. Every
    /// state-changing operation calls it in its transaction, so a revoked session's access token
    /// (still valid on another instance for up to its lifetime) can read but not write.
    pub async fn ensure_live(
        conn: &impl ConnectionTrait,
        principal: &Principal,
    ) -> ServiceResult<()> {
        let live = sessions::Entity::find()
            .select_only()
            .column(sessions::Column::Id)
            .filter(sessions::Column::Id.eq(principal.session_id))
            .filter(sessions::Column::UserId.eq(principal.user_id))
            .filter(sessions::Column::RevokedAt.is_null())
            .filter(sessions::Column::ExpiresAt.gt(Utc::now()))
            .into_tuple::<Uuid>()
            .one(conn)
            .await?;
        match live {
            Some(_) => Ok(()),
            None => Err(ServiceError::Unauthenticated("session_revoked")),
        }
    }

    /// Revokes one of the caller's own live sessions; anything else is a 404.
    pub async fn revoke(
        ctx: &AppContext,
        meta: &RequestMeta,
        principal: &Principal,
        session_id: Uuid,
        action: AuditAction,
    ) -> ServiceResult<()> {
        let txn = crate::db::begin_write(&ctx.db).await?;
        Self::ensure_live(&txn, principal).await?;
        let result = sessions::Entity::update_many()
            .col_expr(sessions::Column::RevokedAt, Expr::value(Utc::now()))
            .col_expr(
                sessions::Column::RevokedReason,
                Expr::value(revoke_reason(action)),
            )
            .filter(sessions::Column::Id.eq(session_id))
            .filter(sessions::Column::UserId.eq(principal.user_id))
            .filter(sessions::Column::RevokedAt.is_null())
            .exec(&txn)
            .await?;
        if result.rows_affected == 0 {
            return Err(ServiceError::NotFound);
        }
        AuditEvent::new(action)
            .actor(principal.user_id, Some(principal.session_id))
            .target("session", session_id)
            .record(&txn, meta)
            .await?;
        txn.commit().await?;
        Self::forget_locally(ctx, &[session_id]);
        Ok(())
    }

    /// Revokes every other live session of the caller; returns how many.
    pub async fn revoke_others(
        ctx: &AppContext,
        meta: &RequestMeta,
        principal: &Principal,
    ) -> ServiceResult<usize> {
        let txn = crate::db::begin_write(&ctx.db).await?;
        Self::ensure_live(&txn, principal).await?;
        let revoked = Self::revoke_all_except(
            &txn,
            principal.user_id,
            Some(principal.session_id),
            "revoked_by_user",
        )
        .await?;
        AuditEvent::new(AuditAction::OtherSessionsRevoked)
            .actor(principal.user_id, Some(principal.session_id))
            .target("user", principal.user_id)
            .details(serde_json::json!({ "sessions_revoked": revoked.len() }))
            .record(&txn, meta)
            .await?;
        txn.commit().await?;
        Self::forget_locally(ctx, &revoked);
        Ok(revoked.len())
    }

    /// Revokes all live sessions of `user_id` but `keep`; returns their ids. Meant to run inside
    /// the caller's transaction.
    pub async fn revoke_all_except(
        conn: &impl ConnectionTrait,
        user_id: Uuid,
        keep: Option<Uuid>,
        reason: &str,
    ) -> ServiceResult<Vec<Uuid>> {
        let mut select = sessions::Entity::find()
            .select_only()
            .column(sessions::Column::Id)
            .filter(sessions::Column::UserId.eq(user_id))
            .filter(sessions::Column::RevokedAt.is_null());
        if let Some(keep) = keep {
            select = select.filter(sessions::Column::Id.ne(keep));
        }
        let ids: Vec<Uuid> = select.into_tuple().all(conn).await?;
        if ids.is_empty() {
            return Ok(ids);
        }
        sessions::Entity::update_many()
            .col_expr(sessions::Column::RevokedAt, Expr::value(Utc::now()))
            .col_expr(
                sessions::Column::RevokedReason,
                Expr::value(reason.to_owned()),
            )
            .filter(sessions::Column::Id.is_in(ids.clone()))
            .filter(sessions::Column::RevokedAt.is_null())
            .exec(conn)
            .await?;
        Ok(ids)
    }

    /// Sessions revoked recently enough that access tokens issued for them may still be live.
    pub async fn recently_revoked(ctx: &AppContext) -> ServiceResult<Vec<Uuid>> {
        let since = Utc::now()
            - Duration::seconds(ctx.keys.access_ttl_secs() + ctx.settings.auth.leeway_secs as i64);
        Ok(sessions::Entity::find()
            .select_only()
            .column(sessions::Column::Id)
            .filter(sessions::Column::RevokedAt.gt(since))
            .into_tuple()
            .all(&ctx.db)
            .await?)
    }

    /// Makes this instance reject access tokens of these sessions at once.
    pub fn forget_locally(ctx: &AppContext, session_ids: &[Uuid]) {
        let until = Utc::now()
            + Duration::seconds(ctx.keys.access_ttl_secs() + ctx.settings.auth.leeway_secs as i64);
        for id in session_ids {
            ctx.revoked.insert(*id, until);
        }
    }
}

fn revoke_reason(action: AuditAction) -> &'static str {
    match action {
        AuditAction::Logout => "logout",
        _ => "revoked_by_user",
    }
}
