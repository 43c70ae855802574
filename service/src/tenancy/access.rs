//! A caller's standing in one organization, and the typed checks every tenant-scoped operation
//! makes before it acts: outsiders get 404, members get 403 for what they may read but not do,
//! 404 for what they may not read.

use entity::{accounts, memberships, organizations, projects};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter};
use uuid::Uuid;

use crate::authz::{Permission, Scope};
use crate::context::AppContext;
use crate::error::{ServiceError, ServiceResult};
use crate::principal::Principal;

pub use entity::organizations::Model as Organization;

/// A signed-in member's view of one live organization.
#[derive(Debug, Clone)]
pub struct OrgAccess {
    pub user_id: Uuid,
    pub session_id: Uuid,
    pub membership_id: Uuid,
    pub organization: Organization,
}

/// Proof that the caller may use `permission` at `scope`; operations that change something take
/// it, so they cannot be called unchecked.
#[derive(Debug, Clone, Copy)]
pub struct Granted {
    pub scope: Scope,
    pub permission: Permission,
}

impl OrgAccess {
    /// The organization if it is live and the caller is a member; 404 otherwise (whether it
    /// does not exist, was deleted, or the caller is an outsider).
    pub async fn load(
        ctx: &AppContext,
        principal: &Principal,
        organization_id: Uuid,
    ) -> ServiceResult<Self> {
        let organization = organizations::Entity::find_by_id(organization_id)
            .filter(organizations::Column::DeletedAt.is_null())
            .one(&ctx.db)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let membership = memberships::Entity::find()
            .filter(memberships::Column::OrganizationId.eq(organization_id))
            .filter(memberships::Column::UserId.eq(principal.user_id))
            .one(&ctx.db)
            .await?
            .ok_or(ServiceError::NotFound)?;
        if organization.require_mfa
            && !crate::mfa::MfaService::session_has_mfa(&ctx.db, principal.session_id).await?
        {
            // A member who did not sign in with a second factor may do nothing here.
            return Err(ServiceError::Denied("mfa_required"));
        }
        Ok(Self {
            user_id: principal.user_id,
            session_id: principal.session_id,
            membership_id: membership.id,
            organization,
        })
    }

    pub fn id(&self) -> Uuid {
        self.organization.id
    }

    pub fn principal(&self) -> Principal {
        Principal {
            user_id: self.user_id,
            session_id: self.session_id,
            organization_id: None,
        }
    }

    pub fn org_scope(&self) -> Scope {
        Scope::organization(self.organization.id)
    }

    /// Casbin's answer for the caller.
    pub async fn can(
        &self,
        ctx: &AppContext,
        scope: &Scope,
        permission: Permission,
    ) -> ServiceResult<bool> {
        self.can_user(ctx, self.user_id, scope, permission).await
    }

    /// Casbin's answer for any user of this organization.
    pub async fn can_user(
        &self,
        ctx: &AppContext,
        user_id: Uuid,
        scope: &Scope,
        permission: Permission,
    ) -> ServiceResult<bool> {
        // Every member may read the organization's own record.
        if permission == Permission::OrgRead
            && scope.account_id.is_none()
            && user_id == self.user_id
        {
            return Ok(true);
        }
        ctx.authz
            .decide(
                &ctx.db,
                self.organization.authz_version,
                user_id,
                scope,
                permission,
            )
            .await
    }

    /// Every permission the caller holds at `scope`.
    pub async fn held(&self, ctx: &AppContext, scope: &Scope) -> ServiceResult<Vec<Permission>> {
        ctx.authz
            .permissions_at(
                &ctx.db,
                self.organization.authz_version,
                self.user_id,
                scope,
            )
            .await
    }

    /// `permission` at `scope`, or 403 if the caller may at least `read` what is there, else 404.
    pub async fn require(
        &self,
        ctx: &AppContext,
        scope: &Scope,
        permission: Permission,
        read: Permission,
    ) -> ServiceResult<Granted> {
        if self.can(ctx, scope, permission).await? {
            return Ok(Granted {
                scope: *scope,
                permission,
            });
        }
        if read != permission && self.can(ctx, scope, read).await? {
            Err(ServiceError::Forbidden)
        } else {
            Err(ServiceError::NotFound)
        }
    }

    /// A live account of this organization (404 for another organization's or a deleted one).
    pub async fn account(
        &self,
        conn: &impl ConnectionTrait,
        account_id: Uuid,
    ) -> ServiceResult<accounts::Model> {
        accounts::Entity::find_by_id(account_id)
            .filter(accounts::Column::OrganizationId.eq(self.organization.id))
            .filter(accounts::Column::DeletedAt.is_null())
            .one(conn)
            .await?
            .ok_or(ServiceError::NotFound)
    }

    /// A live project under a live account of this organization.
    pub async fn project(
        &self,
        conn: &impl ConnectionTrait,
        account_id: Uuid,
        project_id: Uuid,
    ) -> ServiceResult<projects::Model> {
        self.account(conn, account_id).await?;
        projects::Entity::find_by_id(project_id)
            .filter(projects::Column::OrganizationId.eq(self.organization.id))
            .filter(projects::Column::AccountId.eq(account_id))
            .filter(projects::Column::DeletedAt.is_null())
            .one(conn)
            .await?
            .ok_or(ServiceError::NotFound)
    }

    /// Resolves a scope named by type and id to a live scope of this organization.
    pub async fn resolve_scope(
        &self,
        conn: &impl ConnectionTrait,
        scope_type: crate::authz::ScopeType,
        id: Uuid,
    ) -> ServiceResult<Scope> {
        live_scope(conn, self.organization.id, scope_type, id)
            .await?
            .ok_or(ServiceError::NotFound)
    }
}

/// The live scope of `organization_id` named by type and id: the organization itself, a live
/// account of it, or a live project under a live account of it.
pub async fn live_scope(
    conn: &impl ConnectionTrait,
    organization_id: Uuid,
    scope_type: crate::authz::ScopeType,
    id: Uuid,
) -> ServiceResult<Option<Scope>> {
    use crate::authz::ScopeType;
    let org = organization_id;
    let live_account = |account_id: Uuid| async move {
        accounts::Entity::find_by_id(account_id)
            .filter(accounts::Column::OrganizationId.eq(org))
            .filter(accounts::Column::DeletedAt.is_null())
            .one(conn)
            .await
    };
    Ok(match scope_type {
        ScopeType::Organization => (id == org).then(|| Scope::organization(org)),
        ScopeType::Account => live_account(id).await?.map(|a| Scope::account(org, a.id)),
        ScopeType::Project => {
            let project = projects::Entity::find_by_id(id)
                .filter(projects::Column::OrganizationId.eq(org))
                .filter(projects::Column::DeletedAt.is_null())
                .one(conn)
                .await?;
            match project {
                Some(p) if live_account(p.account_id).await?.is_some() => {
                    Some(Scope::project(org, p.account_id, p.id))
                }
                _ => None,
            }
        }
    })
}

/// Marks a change to who may do what in the organization, inside the change's transaction:
/// bumps `authz_version` if it is still the one the caller's decisions were made at, so that
/// two changes decided on the same state cannot both commit (the second gets 409
/// `concurrent_change` and may retry), and every instance rebuilds the organization's enforcer.
/// On PostgreSQL the row lock it takes also serializes the organization's policy changes.
pub async fn bump_authz_version(
    ctx: &AppContext,
    conn: &impl ConnectionTrait,
    access: &OrgAccess,
) -> ServiceResult<()> {
    bump_authz_version_of(
        ctx,
        conn,
        access.organization.id,
        access.organization.authz_version,
    )
    .await
}

/// [`bump_authz_version`] for a change decided on someone else's rights than the caller's (an
/// invitation's acceptance rests on its inviter's): the organization and the `authz_version`
/// those decisions were made at.
///
/// This instance forgets what it remembers of the organization at once; every instance
/// (this one included) also learns of the commit from the change feed.
pub async fn bump_authz_version_of(
    ctx: &AppContext,
    conn: &impl ConnectionTrait,
    organization_id: Uuid,
    expected_version: i64,
) -> ServiceResult<()> {
    let result = organizations::Entity::update_many()
        .col_expr(
            organizations::Column::AuthzVersion,
            Expr::col(organizations::Column::AuthzVersion).add(1),
        )
        .filter(organizations::Column::Id.eq(organization_id))
        .filter(organizations::Column::AuthzVersion.eq(expected_version))
        .filter(organizations::Column::DeletedAt.is_null())
        .exec(conn)
        .await?;
    if result.rows_affected == 1 {
        ctx.authz.forget_organization(organization_id);
        Ok(())
    } else {
        Err(ServiceError::Conflict("concurrent_change"))
    }
}
