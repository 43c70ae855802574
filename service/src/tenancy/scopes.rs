//! Accounts and projects: created, listed (only what the caller may read, filtered in the
//! query), renamed under optimistic locking, soft-deleted.

use chrono::Utc;
use entity::{accounts, projects};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use uuid::Uuid;

use super::access::{bump_authz_version, Granted, OrgAccess};
use super::{check_version, grant_scopes, slug_conflict, NewScope, ScopeFilter, ScopePatch};
use crate::audit::{AuditAction, AuditEvent};
use crate::authz::{Permission, Scope};
use crate::context::{AppContext, RequestMeta};
use crate::error::{ServiceError, ServiceResult};
use crate::paging::{Page, PageRequest};
use crate::sessions::SessionService;

pub use accounts::Model as Account;
pub use projects::Model as Project;

/// The columns [`patch_row`] and [`soft_delete_row`] touch, for any of the three scope tables.
pub(crate) struct ScopeColumns<C> {
    pub id: C,
    pub version: C,
    pub name: C,
    pub slug: C,
    pub updated_at: C,
    pub deleted_at: C,
}

/// Applies `patch` to a live row if its version is still `expected` (when given); bumps the
/// version. `Ok(false)` when no live row at that version matched.
pub(crate) async fn patch_row<E: EntityTrait>(
    conn: &impl ConnectionTrait,
    cols: &ScopeColumns<E::Column>,
    id: Uuid,
    expected: Option<i32>,
    patch: &ScopePatch,
) -> ServiceResult<bool> {
    let mut update = E::update_many()
        .col_expr(cols.version, Expr::col(cols.version).add(1))
        .col_expr(cols.updated_at, Expr::value(Utc::now()));
    if let Some(name) = &patch.name {
        update = update.col_expr(cols.name, Expr::value(name.clone().into_inner()));
    }
    if let Some(slug) = &patch.slug {
        update = update.col_expr(cols.slug, Expr::value(slug.as_str()));
    }
    let mut update = update
        .filter(cols.id.eq(id))
        .filter(cols.deleted_at.is_null());
    if let Some(v) = expected {
        update = update.filter(cols.version.eq(v));
    }
    Ok(update
        .exec(conn)
        .await
        .map_err(slug_conflict)?
        .rows_affected
        == 1)
}

/// Marks a live row deleted if its version is still `expected` (when given).
pub(crate) async fn soft_delete_row<E: EntityTrait>(
    conn: &impl ConnectionTrait,
    cols: &ScopeColumns<E::Column>,
    id: Uuid,
    expected: Option<i32>,
) -> ServiceResult<bool> {
    let mut update = E::update_many()
        .col_expr(cols.deleted_at, Expr::value(Utc::now()))
        .filter(cols.id.eq(id))
        .filter(cols.deleted_at.is_null());
    if let Some(v) = expected {
        update = update.filter(cols.version.eq(v));
    }
    Ok(update.exec(conn).await?.rows_affected == 1)
}

pub(crate) fn patch_details(patch: &ScopePatch) -> serde_json::Value {
    let mut changed = serde_json::Map::new();
    if let Some(name) = &patch.name {
        changed.insert("name".into(), name.clone().into_inner().into());
    }
    if let Some(slug) = &patch.slug {
        changed.insert("slug".into(), slug.as_str().into());
    }
    if let Some(require_mfa) = patch.require_mfa {
        changed.insert("require_mfa".into(), require_mfa.into());
    }
    serde_json::Value::Object(changed)
}

const ACCOUNT_COLS: ScopeColumns<accounts::Column> = ScopeColumns {
    id: accounts::Column::Id,
    version: accounts::Column::Version,
    name: accounts::Column::Name,
    slug: accounts::Column::Slug,
    updated_at: accounts::Column::UpdatedAt,
    deleted_at: accounts::Column::DeletedAt,
};

const PROJECT_COLS: ScopeColumns<projects::Column> = ScopeColumns {
    id: projects::Column::Id,
    version: projects::Column::Version,
    name: projects::Column::Name,
    slug: projects::Column::Slug,
    updated_at: projects::Column::UpdatedAt,
    deleted_at: projects::Column::DeletedAt,
};

/// What a tenancy write records, beyond the row it changes.
struct Change<'a> {
    access: &'a OrgAccess,
    meta: &'a RequestMeta,
    action: AuditAction,
    target: (&'static str, Uuid),
    details: serde_json::Value,
}

impl Change<'_> {
    async fn record(self, conn: &impl ConnectionTrait) -> ServiceResult<()> {
        AuditEvent::new(self.action)
            .actor(self.access.user_id, Some(self.access.session_id))
            .organization(self.access.id())
            .target(self.target.0, self.target.1)
            .details(self.details)
            .record(conn, self.meta)
            .await?;
        Ok(())
    }
}

pub struct ScopeService;

impl ScopeService {
    pub async fn create_account(
        ctx: &AppContext,
        meta: &RequestMeta,
        access: &OrgAccess,
        _granted: Granted,
        new: NewScope,
    ) -> ServiceResult<Account> {
        let now = Utc::now();
        let txn = crate::db::begin_write(&ctx.db).await?;
        SessionService::ensure_live(&txn, &access.principal()).await?;
        let account = accounts::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(access.id()),
            slug: Set(new.slug.into_inner()),
            name: Set(new.name.into_inner()),
            version: Set(1),
            created_at: Set(now),
            updated_at: Set(now),
            deleted_at: Set(None),
        }
        .insert(&txn)
        .await
        .map_err(slug_conflict)?;
        Change {
            access,
            meta,
            action: AuditAction::AccountCreated,
            target: ("account", account.id),
            details: serde_json::json!({ "slug": account.slug, "name": account.name }),
        }
        .record(&txn)
        .await?;
        txn.commit().await?;
        Ok(account)
    }

    /// The organization's live accounts the caller may read: all of them with `account:read`
    /// at the organization, else those where a grant gives it.
    pub async fn list_accounts(
        ctx: &AppContext,
        access: &OrgAccess,
        filter: &ScopeFilter,
        page: &PageRequest,
    ) -> ServiceResult<Page<Account>> {
        let mut query = accounts::Entity::find()
            .filter(accounts::Column::OrganizationId.eq(access.id()))
            .filter(accounts::Column::DeletedAt.is_null());
        if !access
            .can(ctx, &access.org_scope(), Permission::AccountRead)
            .await?
        {
            let mut readable = Vec::new();
            for (scope_type, id) in grant_scopes(&ctx.db, access).await? {
                if scope_type == "account"
                    && access
                        .can(
                            ctx,
                            &Scope::account(access.id(), id),
                            Permission::AccountRead,
                        )
                        .await?
                {
                    readable.push(id);
                }
            }
            query = query.filter(accounts::Column::Id.is_in(readable));
        }
        query = filter.apply(query, accounts::Column::Slug, accounts::Column::Name);
        if let Some(after) = page.after {
            query = query.filter(accounts::Column::Id.gt(after));
        }
        let rows = query
            .order_by_asc(accounts::Column::Id)
            .limit(page.fetch())
            .all(&ctx.db)
            .await?;
        Ok(Page::from_rows(rows, page, |a| a.id))
    }

    pub async fn update_account(
        ctx: &AppContext,
        meta: &RequestMeta,
        access: &OrgAccess,
        granted: Granted,
        expected_version: Option<i32>,
        patch: ScopePatch,
    ) -> ServiceResult<Account> {
        let id = granted.scope.account_id.ok_or(ServiceError::NotFound)?;
        let current = access.account(&ctx.db, id).await?;
        check_version(expected_version, current.version)?;
        if patch.is_empty() {
            return Ok(current);
        }
        let txn = crate::db::begin_write(&ctx.db).await?;
        SessionService::ensure_live(&txn, &access.principal()).await?;
        if !patch_row::<accounts::Entity>(&txn, &ACCOUNT_COLS, id, expected_version, &patch).await?
        {
            access.account(&txn, id).await?;
            return Err(ServiceError::VersionMismatch);
        }
        Change {
            access,
            meta,
            action: AuditAction::AccountUpdated,
            target: ("account", id),
            details: patch_details(&patch),
        }
        .record(&txn)
        .await?;
        let account = access.account(&txn, id).await?;
        txn.commit().await?;
        Ok(account)
    }

    /// Soft-deletes the account; its projects and every grant at or below it stop counting.
    pub async fn delete_account(
        ctx: &AppContext,
        meta: &RequestMeta,
        access: &OrgAccess,
        granted: Granted,
        expected_version: Option<i32>,
    ) -> ServiceResult<()> {
        let id = granted.scope.account_id.ok_or(ServiceError::NotFound)?;
        let current = access.account(&ctx.db, id).await?;
        check_version(expected_version, current.version)?;
        let txn = crate::db::begin_write(&ctx.db).await?;
        SessionService::ensure_live(&txn, &access.principal()).await?;
        bump_authz_version(ctx, &txn, access).await?;
        if !soft_delete_row::<accounts::Entity>(&txn, &ACCOUNT_COLS, id, expected_version).await? {
            access.account(&txn, id).await?;
            return Err(ServiceError::VersionMismatch);
        }
        Change {
            access,
            meta,
            action: AuditAction::AccountDeleted,
            target: ("account", id),
            details: serde_json::json!({}),
        }
        .record(&txn)
        .await?;
        txn.commit().await?;
        Ok(())
    }

    pub async fn create_project(
        ctx: &AppContext,
        meta: &RequestMeta,
        access: &OrgAccess,
        granted: Granted,
        new: NewScope,
    ) -> ServiceResult<Project> {
        let account_id = granted.scope.account_id.ok_or(ServiceError::NotFound)?;
        let now = Utc::now();
        let txn = crate::db::begin_write(&ctx.db).await?;
        SessionService::ensure_live(&txn, &access.principal()).await?;
        // The account may have been deleted since the decision; the foreign key alone would
        // accept a project under a soft-deleted account.
        access.account(&txn, account_id).await?;
        let project = projects::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(access.id()),
            account_id: Set(account_id),
            slug: Set(new.slug.into_inner()),
            name: Set(new.name.into_inner()),
            version: Set(1),
            created_at: Set(now),
            updated_at: Set(now),
            deleted_at: Set(None),
        }
        .insert(&txn)
        .await
        .map_err(slug_conflict)?;
        Change {
            access,
            meta,
            action: AuditAction::ProjectCreated,
            target: ("project", project.id),
            details: serde_json::json!({
                "account_id": account_id, "slug": project.slug, "name": project.name
            }),
        }
        .record(&txn)
        .await?;
        txn.commit().await?;
        Ok(project)
    }

    /// The account's live projects the caller may read: all of them with `project:read` at the
    /// account (or above), else those where a grant on the project gives it. 404 when the
    /// caller may read neither the account nor any project in it.
    pub async fn list_projects(
        ctx: &AppContext,
        access: &OrgAccess,
        account_id: Uuid,
        filter: &ScopeFilter,
        page: &PageRequest,
    ) -> ServiceResult<Page<Project>> {
        access.account(&ctx.db, account_id).await?;
        let account_scope = Scope::account(access.id(), account_id);
        let mut query = projects::Entity::find()
            .filter(projects::Column::OrganizationId.eq(access.id()))
            .filter(projects::Column::AccountId.eq(account_id))
            .filter(projects::Column::DeletedAt.is_null());
        if !access
            .can(ctx, &account_scope, Permission::ProjectRead)
            .await?
        {
            let candidates: Vec<Uuid> = grant_scopes(&ctx.db, access)
                .await?
                .into_iter()
                .filter(|(t, _)| t == "project")
                .map(|(_, id)| id)
                .collect();
            let mut readable = Vec::new();
            if !candidates.is_empty() {
                let in_account: Vec<Uuid> = projects::Entity::find()
                    .select_only()
                    .column(projects::Column::Id)
                    .filter(projects::Column::AccountId.eq(account_id))
                    .filter(projects::Column::Id.is_in(candidates))
                    .into_tuple()
                    .all(&ctx.db)
                    .await?;
                for id in in_account {
                    let scope = Scope::project(access.id(), account_id, id);
                    if access.can(ctx, &scope, Permission::ProjectRead).await? {
                        readable.push(id);
                    }
                }
            }
            if readable.is_empty()
                && !access
                    .can(ctx, &account_scope, Permission::AccountRead)
                    .await?
            {
                return Err(ServiceError::NotFound);
            }
            query = query.filter(projects::Column::Id.is_in(readable));
        }
        query = filter.apply(query, projects::Column::Slug, projects::Column::Name);
        if let Some(after) = page.after {
            query = query.filter(projects::Column::Id.gt(after));
        }
        let rows = query
            .order_by_asc(projects::Column::Id)
            .limit(page.fetch())
            .all(&ctx.db)
            .await?;
        Ok(Page::from_rows(rows, page, |p| p.id))
    }

    pub async fn update_project(
        ctx: &AppContext,
        meta: &RequestMeta,
        access: &OrgAccess,
        granted: Granted,
        expected_version: Option<i32>,
        patch: ScopePatch,
    ) -> ServiceResult<Project> {
        let (account_id, id) = project_ids(&granted)?;
        let current = access.project(&ctx.db, account_id, id).await?;
        check_version(expected_version, current.version)?;
        if patch.is_empty() {
            return Ok(current);
        }
        let txn = crate::db::begin_write(&ctx.db).await?;
        SessionService::ensure_live(&txn, &access.principal()).await?;
        if !patch_row::<projects::Entity>(&txn, &PROJECT_COLS, id, expected_version, &patch).await?
        {
            access.project(&txn, account_id, id).await?;
            return Err(ServiceError::VersionMismatch);
        }
        Change {
            access,
            meta,
            action: AuditAction::ProjectUpdated,
            target: ("project", id),
            details: patch_details(&patch),
        }
        .record(&txn)
        .await?;
        let project = access.project(&txn, account_id, id).await?;
        txn.commit().await?;
        Ok(project)
    }

    pub async fn delete_project(
        ctx: &AppContext,
        meta: &RequestMeta,
        access: &OrgAccess,
        granted: Granted,
        expected_version: Option<i32>,
    ) -> ServiceResult<()> {
        let (account_id, id) = project_ids(&granted)?;
        let current = access.project(&ctx.db, account_id, id).await?;
        check_version(expected_version, current.version)?;
        let txn = crate::db::begin_write(&ctx.db).await?;
        SessionService::ensure_live(&txn, &access.principal()).await?;
        bump_authz_version(ctx, &txn, access).await?;
        if !soft_delete_row::<projects::Entity>(&txn, &PROJECT_COLS, id, expected_version).await? {
            access.project(&txn, account_id, id).await?;
            return Err(ServiceError::VersionMismatch);
        }
        Change {
            access,
            meta,
            action: AuditAction::ProjectDeleted,
            target: ("project", id),
            details: serde_json::json!({ "account_id": account_id }),
        }
        .record(&txn)
        .await?;
        txn.commit().await?;
        Ok(())
    }
}

fn project_ids(granted: &Granted) -> ServiceResult<(Uuid, Uuid)> {
    match (granted.scope.account_id, granted.scope.project_id) {
        (Some(a), Some(p)) => Ok((a, p)),
        _ => Err(ServiceError::NotFound),
    }
}
