//! Tenancy: organizations → accounts → projects, who belongs to them, and the checks every
//! tenant-scoped operation makes (see [`access`]).
//!
//! Deletion model: organizations, accounts and projects are soft-deleted (`deleted_at`). Every
//! read and every decision requires the whole chain above an object to be live, so deleting an
//! organization or account hides everything below it at once, and its slug may be reused.
//! Memberships, grants, invitations and custom roles are deleted for real; ending a membership
//! deletes its grants with it (foreign-key cascade, same transaction).

pub mod access;
pub mod guards;
pub mod invitations;
pub mod members;
pub mod roles;
mod scopes;

use chrono::Utc;
use entity::{memberships, organizations, role_assignments};
use sea_orm::sea_query::{Expr, ExprTrait, Func, LikeExpr};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, Set,
};
use uuid::Uuid;

pub use access::{bump_authz_version, live_scope, Granted, OrgAccess, Organization};
pub use scopes::{Account, Project, ScopeService};

use crate::audit::{AuditAction, AuditEvent};
use crate::authz::{Permission, ScopeType};
use crate::context::{AppContext, RequestMeta};
use crate::domain::{ResourceName, Slug};
use crate::error::{is_unique_violation, ServiceError, ServiceResult};
use crate::paging::{like_prefix, Page, PageRequest};
use crate::principal::Principal;
use crate::sessions::SessionService;

/// The organizations `user_id` is a member of.
pub async fn organizations_of(
    conn: &impl ConnectionTrait,
    user_id: Uuid,
) -> ServiceResult<Vec<Uuid>> {
    Ok(memberships::Entity::find()
        .select_only()
        .column(memberships::Column::OrganizationId)
        .filter(memberships::Column::UserId.eq(user_id))
        .into_tuple()
        .all(conn)
        .await?)
}

/// Name and slug of a new organization, account or project.
#[derive(Debug, Clone)]
pub struct NewScope {
    pub name: ResourceName,
    pub slug: Slug,
}

/// Changes to a name or slug; `None` leaves it alone.
#[derive(Debug, Clone, Default)]
pub struct ScopePatch {
    pub name: Option<ResourceName>,
    pub slug: Option<Slug>,
    /// Organizations only: whether members must sign in with a second factor to act in it.
    pub require_mfa: Option<bool>,
}

impl ScopePatch {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.slug.is_none() && self.require_mfa.is_none()
    }
}

/// Filters of a list of organizations, accounts or projects.
#[derive(Debug, Clone, Default)]
pub struct ScopeFilter {
    pub slug_prefix: Option<String>,
    pub name_prefix: Option<String>,
}

impl ScopeFilter {
    /// Applies the prefixes to a query over a table with `slug` and `name` columns.
    pub(crate) fn apply<Q: QueryFilter>(
        &self,
        mut query: Q,
        slug: impl ColumnTrait,
        name: impl ColumnTrait,
    ) -> Q {
        if let Some(p) = &self.slug_prefix {
            query = query.filter(
                Expr::col(slug).like(LikeExpr::new(like_prefix(&p.to_lowercase())).escape('\\')),
            );
        }
        if let Some(p) = &self.name_prefix {
            query = query.filter(
                Expr::expr(Func::lower(Expr::col(name)))
                    .like(LikeExpr::new(like_prefix(&p.to_lowercase())).escape('\\')),
            );
        }
        query
    }
}

/// What a unique-slug violation means to the client.
pub(crate) fn slug_conflict(err: DbErr) -> ServiceError {
    if is_unique_violation(&err) {
        ServiceError::Conflict("slug_taken")
    } else {
        err.into()
    }
}

/// Checks an optional If-Match / body version against the row's.
pub(crate) fn check_version(expected: Option<i32>, actual: i32) -> ServiceResult<()> {
    match expected {
        Some(v) if v != actual => Err(ServiceError::VersionMismatch),
        _ => Ok(()),
    }
}

const ORG_COLS: scopes::ScopeColumns<organizations::Column> = scopes::ScopeColumns {
    id: organizations::Column::Id,
    version: organizations::Column::Version,
    name: organizations::Column::Name,
    slug: organizations::Column::Slug,
    updated_at: organizations::Column::UpdatedAt,
    deleted_at: organizations::Column::DeletedAt,
};

pub struct OrgService;

impl OrgService {
    /// Creates an organization; the creator becomes a member with the built-in `owner` role.
    #[tracing::instrument(skip_all, fields(user_id = %principal.user_id))]
    pub async fn create(
        ctx: &AppContext,
        meta: &RequestMeta,
        principal: &Principal,
        new: NewScope,
    ) -> ServiceResult<Organization> {
        let now = Utc::now();
        let org_id = Uuid::now_v7();
        let membership_id = Uuid::now_v7();
        let txn = crate::db::begin_write(&ctx.db).await?;
        SessionService::ensure_live(&txn, principal).await?;
        let org = organizations::ActiveModel {
            id: Set(org_id),
            slug: Set(new.slug.into_inner()),
            name: Set(new.name.into_inner()),
            version: Set(1),
            authz_version: Set(0),
            require_mfa: Set(false),
            created_at: Set(now),
            updated_at: Set(now),
            deleted_at: Set(None),
        }
        .insert(&txn)
        .await
        .map_err(slug_conflict)?;
        memberships::ActiveModel {
            id: Set(membership_id),
            organization_id: Set(org_id),
            user_id: Set(principal.user_id),
            created_at: Set(now),
        }
        .insert(&txn)
        .await?;
        role_assignments::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(org_id),
            membership_id: Set(membership_id),
            role_id: Set(migration::builtin_role_id("owner")),
            scope_type: Set(ScopeType::Organization.as_str().into()),
            scope_id: Set(org_id),
            account_id: Set(None),
            project_id: Set(None),
            granted_by: Set(Some(principal.user_id)),
            created_at: Set(now),
        }
        .insert(&txn)
        .await?;
        AuditEvent::new(AuditAction::OrgCreated)
            .actor(principal.user_id, Some(principal.session_id))
            .organization(org_id)
            .target("organization", org_id)
            .details(serde_json::json!({ "slug": org.slug, "name": org.name }))
            .record(&txn, meta)
            .await?;
        txn.commit().await?;
        Ok(org)
    }

    /// The live organizations the caller belongs to, oldest first.
    pub async fn list_mine(
        ctx: &AppContext,
        principal: &Principal,
        filter: &ScopeFilter,
        page: &PageRequest,
    ) -> ServiceResult<Page<Organization>> {
        let mut query = organizations::Entity::find()
            .filter(organizations::Column::DeletedAt.is_null())
            .filter(
                organizations::Column::Id.in_subquery(
                    sea_orm::sea_query::Query::select()
                        .column(memberships::Column::OrganizationId)
                        .from(memberships::Entity)
                        .and_where(Expr::col(memberships::Column::UserId).eq(principal.user_id))
                        .to_owned(),
                ),
            );
        query = filter.apply(
            query,
            organizations::Column::Slug,
            organizations::Column::Name,
        );
        if let Some(after) = page.after {
            query = query.filter(organizations::Column::Id.gt(after));
        }
        let rows = query
            .order_by_asc(organizations::Column::Id)
            .limit(page.fetch())
            .all(&ctx.db)
            .await?;
        Ok(Page::from_rows(rows, page, |o| o.id))
    }

    pub async fn get(access: &OrgAccess) -> Organization {
        access.organization.clone()
    }

    #[tracing::instrument(skip_all, fields(organization_id = %access.id()))]
    pub async fn update(
        ctx: &AppContext,
        meta: &RequestMeta,
        access: &OrgAccess,
        _granted: Granted,
        expected_version: Option<i32>,
        patch: ScopePatch,
    ) -> ServiceResult<Organization> {
        check_version(expected_version, access.organization.version)?;
        if patch.is_empty() {
            return Ok(access.organization.clone());
        }
        if patch.require_mfa == Some(true)
            && !crate::mfa::MfaService::session_has_mfa(&ctx.db, access.session_id).await?
        {
            // Whoever requires a second factor has signed in with one (or would lock themselves out).
            return Err(ServiceError::Denied("mfa_required"));
        }
        let txn = crate::db::begin_write(&ctx.db).await?;
        SessionService::ensure_live(&txn, &access.principal()).await?;
        if !scopes::patch_row::<organizations::Entity>(
            &txn,
            &ORG_COLS,
            access.id(),
            expected_version,
            &patch,
        )
        .await?
        {
            return Err(Self::why_not_updated(&txn, access.id()).await);
        }
        if let Some(require_mfa) = patch.require_mfa {
            // Who may act here changes: every instance's view of the organization must move.
            bump_authz_version(ctx, &txn, access).await?;
            organizations::Entity::update_many()
                .col_expr(organizations::Column::RequireMfa, Expr::value(require_mfa))
                .filter(organizations::Column::Id.eq(access.id()))
                .exec(&txn)
                .await?;
        }
        AuditEvent::new(AuditAction::OrgUpdated)
            .actor(access.user_id, Some(access.session_id))
            .organization(access.id())
            .target("organization", access.id())
            .details(scopes::patch_details(&patch))
            .record(&txn, meta)
            .await?;
        let org = organizations::Entity::find_by_id(access.id())
            .one(&txn)
            .await?
            .ok_or(ServiceError::NotFound)?;
        txn.commit().await?;
        Ok(org)
    }

    async fn why_not_updated(conn: &impl ConnectionTrait, id: Uuid) -> ServiceError {
        match organizations::Entity::find_by_id(id)
            .filter(organizations::Column::DeletedAt.is_null())
            .one(conn)
            .await
        {
            Ok(Some(_)) => ServiceError::VersionMismatch,
            Ok(None) => ServiceError::NotFound,
            Err(e) => e.into(),
        }
    }

    /// Soft-deletes the organization: it and everything in it vanish from every read and
    /// decision at once, and its slug is free again.
    #[tracing::instrument(skip_all, fields(organization_id = %access.id()))]
    pub async fn delete(
        ctx: &AppContext,
        meta: &RequestMeta,
        access: &OrgAccess,
        _granted: Granted,
        expected_version: Option<i32>,
    ) -> ServiceResult<()> {
        check_version(expected_version, access.organization.version)?;
        let txn = crate::db::begin_write(&ctx.db).await?;
        SessionService::ensure_live(&txn, &access.principal()).await?;
        bump_authz_version(ctx, &txn, access).await?;
        if !scopes::soft_delete_row::<organizations::Entity>(
            &txn,
            &ORG_COLS,
            access.id(),
            expected_version,
        )
        .await?
        {
            return Err(Self::why_not_updated(&txn, access.id()).await);
        }
        AuditEvent::new(AuditAction::OrgDeleted)
            .actor(access.user_id, Some(access.session_id))
            .organization(access.id())
            .target("organization", access.id())
            .record(&txn, meta)
            .await?;
        txn.commit().await?;
        Ok(())
    }
}

/// The caller's grant scopes in the organization: `(scope_type, scope_id, account_id)`, for
/// narrowing lists to what the caller may read.
pub(crate) async fn grant_scopes(
    conn: &impl ConnectionTrait,
    access: &OrgAccess,
) -> ServiceResult<Vec<(String, Uuid)>> {
    Ok(role_assignments::Entity::find()
        .select_only()
        .column(role_assignments::Column::ScopeType)
        .column(role_assignments::Column::ScopeId)
        .filter(role_assignments::Column::MembershipId.eq(access.membership_id))
        .into_tuple::<(String, Uuid)>()
        .all(conn)
        .await?)
}

/// The permission that decides whether an outsider-to-the-object sees 403 or 404.
pub fn read_permission_for(permission: Permission) -> Permission {
    use Permission::*;
    match permission {
        OrgRead | OrgUpdate | OrgDelete | AccountCreate | MemberRead | MemberInvite
        | MemberRemove | RoleRead | RoleManage | RoleAssign | AuthzCheck => OrgRead,
        AccountRead | AccountUpdate | AccountDelete | ProjectCreate => AccountRead,
        ProjectRead | ProjectUpdate | ProjectDelete => ProjectRead,
    }
}
