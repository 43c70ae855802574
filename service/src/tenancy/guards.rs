//! The guards every path that hands out or takes away rights shares: nobody grants (or
//! invites with, or defines) a role carrying a permission they do not hold at that scope, and
//! an organization always keeps an owner at organization scope.

use std::collections::BTreeSet;

use entity::{memberships, role_assignments, roles};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, PaginatorTrait, QueryFilter};
use uuid::Uuid;

use super::access::OrgAccess;
use crate::authz::{Permission, Scope, ScopeType};
use crate::context::AppContext;
use crate::error::{ServiceError, ServiceResult};

pub use roles::Model as RoleRow;

/// The built-in role every organization must keep at least one of at organization scope.
pub const OWNER_ROLE: &str = "owner";

/// A role usable in an organization: a built-in one, or a custom role of that organization.
#[derive(Debug, Clone)]
pub struct RoleInOrg {
    pub row: RoleRow,
    pub permissions: BTreeSet<Permission>,
}

impl RoleInOrg {
    pub fn is_owner(&self) -> bool {
        self.row.builtin && self.row.name == OWNER_ROLE
    }
}

/// The permissions a custom role row stores (names outside the vocabulary grant nothing).
pub fn stored_permissions(row: &RoleRow) -> BTreeSet<Permission> {
    row.permissions
        .as_ref()
        .and_then(|p| p.as_array())
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str().and_then(|p| p.parse().ok()))
        .collect()
}

/// Role `role_id` if it is built-in or belongs to this organization; 404 otherwise (another
/// organization's custom role does not exist here). A built-in role's permissions come from
/// the loaded policy.
pub async fn role_in_org(
    ctx: &AppContext,
    conn: &impl ConnectionTrait,
    access: &OrgAccess,
    role_id: Uuid,
) -> ServiceResult<RoleInOrg> {
    let row = roles::Entity::find_by_id(role_id)
        .one(conn)
        .await?
        .ok_or(ServiceError::NotFound)?;
    let permissions = if row.builtin {
        ctx.authz
            .policy()
            .builtin_permissions(&row.name)
            .cloned()
            .unwrap_or_default()
    } else if row.organization_id == Some(access.id()) {
        stored_permissions(&row)
    } else {
        return Err(ServiceError::NotFound);
    };
    Ok(RoleInOrg { row, permissions })
}

/// Fails with 403 `escalation_denied` unless the caller holds `via` and every permission in
/// `permissions` at `scope`: nobody hands out more than they have.
pub async fn ensure_may_grant(
    ctx: &AppContext,
    access: &OrgAccess,
    scope: &Scope,
    via: Permission,
    permissions: &BTreeSet<Permission>,
) -> ServiceResult<()> {
    if !access.can(ctx, scope, via).await? {
        return Err(ServiceError::Forbidden);
    }
    let held: BTreeSet<Permission> = access.held(ctx, scope).await?.into_iter().collect();
    if permissions.is_subset(&held) {
        Ok(())
    } else {
        Err(ServiceError::Denied("escalation_denied"))
    }
}

/// Fails with 409 `last_owner` if, after removing `removed` (role assignment ids), the
/// organization would have no owner at organization scope. Call it in the removing
/// transaction, after [`super::bump_authz_version`] (which serializes policy changes).
pub async fn ensure_owner_remains(
    conn: &impl ConnectionTrait,
    organization_id: Uuid,
    removed: &[Uuid],
) -> ServiceResult<()> {
    let owners = role_assignments::Entity::find()
        .filter(role_assignments::Column::OrganizationId.eq(organization_id))
        .filter(role_assignments::Column::RoleId.eq(migration::builtin_role_id(OWNER_ROLE)))
        .filter(role_assignments::Column::ScopeType.eq(ScopeType::Organization.as_str()))
        .filter(role_assignments::Column::Id.is_not_in(removed.to_vec()))
        .count(conn)
        .await?;
    if owners == 0 {
        Err(ServiceError::Conflict("last_owner"))
    } else {
        Ok(())
    }
}

/// The ids of a membership's role assignments (to check [`ensure_owner_remains`] before the
/// membership, and with it its grants, goes).
pub async fn membership_assignment_ids(
    conn: &impl ConnectionTrait,
    membership_id: Uuid,
) -> ServiceResult<Vec<Uuid>> {
    Ok(role_assignments::Entity::find()
        .filter(role_assignments::Column::MembershipId.eq(membership_id))
        .all(conn)
        .await?
        .into_iter()
        .map(|a| a.id)
        .collect())
}

/// The membership of `user_id` in the organization, if any.
pub async fn membership_of(
    conn: &impl ConnectionTrait,
    organization_id: Uuid,
    user_id: Uuid,
) -> ServiceResult<Option<memberships::Model>> {
    Ok(memberships::Entity::find()
        .filter(memberships::Column::OrganizationId.eq(organization_id))
        .filter(memberships::Column::UserId.eq(user_id))
        .one(conn)
        .await?)
}

/// A 404 about an id the request *body* names (a role, a scope) is a validation error of that
/// field: the path's objects exist, and the same answer for "no such thing" and "not one you
/// may see" keeps the latter from leaking.
pub fn unknown_reference(
    field: &'static str,
    code: &'static str,
) -> impl Fn(ServiceError) -> ServiceError {
    move |err| match err {
        ServiceError::NotFound => ServiceError::validation(
            field,
            code,
            format!("{field} names nothing you can use in this organization"),
        ),
        other => other,
    }
}
