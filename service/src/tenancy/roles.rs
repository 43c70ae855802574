//! Custom roles and role assignments: defined, granted and revoked under the escalation guard
//! (nobody hands out or edits more than they hold) and the last-owner rule.

use std::collections::{BTreeSet, HashMap};

use chrono::Utc;
use entity::{memberships, projects, role_assignments, roles};
use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, PaginatorTrait,
    QueryFilter, QueryOrder, QuerySelect, Set,
};
use uuid::Uuid;

use super::access::{bump_authz_version, Granted, OrgAccess};
use super::guards::{
    ensure_may_grant, ensure_owner_remains, membership_of, role_in_org, unknown_reference,
    RoleInOrg,
};
use super::{check_version, grant_scopes};
use crate::audit::{AuditAction, AuditEvent};
use crate::authz::{Permission, Scope, ScopeType};
use crate::context::{AppContext, RequestMeta};
use crate::domain::RoleName;
use crate::error::{is_unique_violation, ServiceError, ServiceResult};
use crate::paging::{Page, PageRequest};
use crate::sessions::SessionService;

pub use role_assignments::Model as AssignmentRow;

/// More entries than the vocabulary has, so any honest list fits; a bound on what a body costs.
pub const MAX_PERMISSION_ENTRIES: usize = 100;

/// A custom role's permissions: a non-empty set of vocabulary names (duplicates collapse).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionSet(BTreeSet<Permission>);

impl PermissionSet {
    pub fn parse<S: AsRef<str>>(raw: &[S]) -> ServiceResult<Self> {
        if raw.is_empty() {
            return Err(ServiceError::validation(
                "permissions",
                "no_permissions",
                "a custom role needs at least one permission",
            ));
        }
        if raw.len() > MAX_PERMISSION_ENTRIES {
            return Err(ServiceError::validation(
                "permissions",
                "too_many_permissions",
                format!("at most {MAX_PERMISSION_ENTRIES} entries"),
            ));
        }
        let mut set = BTreeSet::new();
        let mut unknown = Vec::new();
        for name in raw {
            match name.as_ref().parse::<Permission>() {
                Ok(p) => {
                    set.insert(p);
                }
                // Echo a few, shortened: the message must not grow with the body.
                Err(e) if unknown.len() < 5 => {
                    unknown.push(format!("`{}`", e.0.chars().take(64).collect::<String>()))
                }
                Err(_) => {}
            }
        }
        if !unknown.is_empty() {
            return Err(ServiceError::validation(
                "permissions",
                "unknown_permission",
                format!(
                    "unknown permission(s): {}; known: {}",
                    unknown.join(", "),
                    Permission::ALL.map(Permission::as_str).join(", ")
                ),
            ));
        }
        Ok(Self(set))
    }

    pub fn as_set(&self) -> &BTreeSet<Permission> {
        &self.0
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::Value::from(sorted_names(&self.0))
    }
}

/// Permission names in alphabetical order, as responses and stored rows carry them.
pub fn sorted_names(permissions: &BTreeSet<Permission>) -> Vec<&'static str> {
    let mut names: Vec<&'static str> = permissions.iter().map(|p| p.as_str()).collect();
    names.sort_unstable();
    names
}

/// A role as the API shows it: the row and its effective permission set.
#[derive(Debug, Clone)]
pub struct RoleView {
    pub row: roles::Model,
    pub permissions: BTreeSet<Permission>,
}

impl From<RoleInOrg> for RoleView {
    fn from(r: RoleInOrg) -> Self {
        Self {
            row: r.row,
            permissions: r.permissions,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewRole {
    pub name: RoleName,
    pub description: Option<String>,
    pub permissions: PermissionSet,
}

/// Changes to a custom role; `None` leaves a field alone (`Some(None)` clears the description).
#[derive(Debug, Clone, Default)]
pub struct RolePatch {
    pub name: Option<RoleName>,
    pub description: Option<Option<String>>,
    pub permissions: Option<PermissionSet>,
}

impl RolePatch {
    pub fn is_empty(&self) -> bool {
        self.name.is_none() && self.description.is_none() && self.permissions.is_none()
    }
}

/// A grant as the API shows it.
#[derive(Debug, Clone)]
pub struct AssignmentView {
    pub row: AssignmentRow,
    pub user_id: Uuid,
    pub role_name: String,
}

#[derive(Debug, Clone)]
pub struct NewAssignment {
    pub user_id: Uuid,
    pub role_id: Uuid,
}

/// Filters of the role-assignment list.
#[derive(Debug, Clone, Default)]
pub struct AssignmentFilter {
    pub user_id: Option<Uuid>,
    /// Grants at scopes of this type.
    pub scope_type: Option<ScopeType>,
    /// Grants at exactly this organization, account or project.
    pub scope_id: Option<Uuid>,
    pub role_id: Option<Uuid>,
}

/// The permission that decides whether a caller without the right to act on a scope gets 403
/// (they may see the scope) or 404.
pub fn scope_read_permission(scope: &Scope) -> Permission {
    match scope.scope_type() {
        ScopeType::Organization => Permission::OrgRead,
        ScopeType::Account => Permission::AccountRead,
        ScopeType::Project => Permission::ProjectRead,
    }
}

/// A grant about to be revoked, with the scope it applies at and the proof the caller may.
#[derive(Debug, Clone)]
pub struct UnassignTarget {
    row: AssignmentRow,
    role: RoleInOrg,
    granted: Granted,
}

pub struct RoleService;

impl RoleService {
    /// The roles usable in the organization: the built-in ones first (by name, on the first
    /// pages), then its custom roles, oldest first. One keyset over both: a cursor naming a
    /// built-in role continues after it, any other cursor continues among the custom roles.
    pub async fn list(
        ctx: &AppContext,
        access: &OrgAccess,
        _granted: Granted,
        page: &PageRequest,
    ) -> ServiceResult<Page<RoleView>> {
        let policy = ctx.authz.policy();
        let mut builtin = roles::Entity::find()
            .filter(roles::Column::Builtin.eq(true))
            .all(&ctx.db)
            .await?;
        builtin.sort_by(|a, b| a.name.cmp(&b.name));
        let (start, custom_after) = match page.after {
            None => (0, None),
            Some(after) => match builtin.iter().position(|r| r.id == after) {
                Some(i) => (i + 1, None),
                None => (builtin.len(), Some(after)),
            },
        };
        let mut rows: Vec<RoleView> = builtin
            .into_iter()
            .skip(start)
            .take(page.fetch() as usize)
            .map(|row| RoleView {
                permissions: policy
                    .builtin_permissions(&row.name)
                    .cloned()
                    .unwrap_or_default(),
                row,
            })
            .collect();
        let remaining = page.fetch().saturating_sub(rows.len() as u64);
        if remaining > 0 {
            let mut query = roles::Entity::find()
                .filter(roles::Column::Builtin.eq(false))
                .filter(roles::Column::OrganizationId.eq(access.id()));
            if let Some(after) = custom_after {
                query = query.filter(roles::Column::Id.gt(after));
            }
            let custom = query
                .order_by_asc(roles::Column::Id)
                .limit(remaining)
                .all(&ctx.db)
                .await?;
            rows.extend(custom.into_iter().map(|row| RoleView {
                permissions: super::guards::stored_permissions(&row),
                row,
            }));
        }
        Ok(Page::from_rows(rows, page, |r| r.row.id))
    }

    /// One role usable in the organization (404 for another organization's custom role).
    pub async fn get(
        ctx: &AppContext,
        access: &OrgAccess,
        _granted: Granted,
        role_id: Uuid,
    ) -> ServiceResult<RoleView> {
        Ok(role_in_org(ctx, &ctx.db, access, role_id).await?.into())
    }

    /// Defines a custom role. The caller must hold every permission it carries.
    #[tracing::instrument(skip_all, fields(organization_id = %access.id()))]
    pub async fn create(
        ctx: &AppContext,
        meta: &RequestMeta,
        access: &OrgAccess,
        granted: Granted,
        new: NewRole,
    ) -> ServiceResult<RoleView> {
        ensure_may_grant(
            ctx,
            access,
            &granted.scope,
            granted.permission,
            new.permissions.as_set(),
        )
        .await?;
        let now = Utc::now();
        let txn = crate::db::begin_write(&ctx.db).await?;
        SessionService::ensure_live(&txn, &access.principal()).await?;
        bump_authz_version(ctx, &txn, access).await?;
        ensure_not_builtin_name(ctx, &txn, &new.name).await?;
        let row = roles::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(Some(access.id())),
            name: Set(new.name.into_inner()),
            description: Set(new.description),
            builtin: Set(false),
            permissions: Set(Some(new.permissions.to_json())),
            version: Set(1),
            created_at: Set(now),
            updated_at: Set(now),
        }
        .insert(&txn)
        .await
        .map_err(name_conflict)?;
        audit(access, AuditAction::RoleCreated, ("role", row.id))
            .details(serde_json::json!({
                "name": row.name,
                "permissions": row.permissions,
            }))
            .record(&txn, meta)
            .await?;
        txn.commit().await?;
        Ok(RoleView {
            permissions: new.permissions.0,
            row,
        })
    }

    /// Edits a custom role under optimistic locking. The caller must hold every permission the
    /// role carries before and after: nobody narrows or widens a role above their own rights.
    #[tracing::instrument(skip_all, fields(organization_id = %access.id(), role_id = %role_id))]
    pub async fn update(
        ctx: &AppContext,
        meta: &RequestMeta,
        access: &OrgAccess,
        granted: Granted,
        role_id: Uuid,
        expected_version: Option<i32>,
        patch: RolePatch,
    ) -> ServiceResult<RoleView> {
        let current = custom_role(ctx, access, role_id).await?;
        check_version(expected_version, current.row.version)?;
        let mut touched = current.permissions.clone();
        if let Some(p) = &patch.permissions {
            touched.extend(p.as_set().iter().copied());
        }
        ensure_may_grant(ctx, access, &granted.scope, granted.permission, &touched).await?;
        if patch.is_empty() {
            return Ok(current.into());
        }
        let txn = crate::db::begin_write(&ctx.db).await?;
        SessionService::ensure_live(&txn, &access.principal()).await?;
        bump_authz_version(ctx, &txn, access).await?;
        let mut update = roles::Entity::update_many()
            .col_expr(
                roles::Column::Version,
                Expr::col(roles::Column::Version).add(1),
            )
            .col_expr(roles::Column::UpdatedAt, Expr::value(Utc::now()));
        let mut details = serde_json::Map::new();
        if let Some(name) = &patch.name {
            ensure_not_builtin_name(ctx, &txn, name).await?;
            update = update.col_expr(roles::Column::Name, Expr::value(name.as_str()));
            details.insert("name".into(), name.as_str().into());
        }
        if let Some(description) = &patch.description {
            update = update.col_expr(roles::Column::Description, Expr::value(description.clone()));
            details.insert("description".into(), description.clone().into());
        }
        if let Some(permissions) = &patch.permissions {
            update = update.col_expr(
                roles::Column::Permissions,
                Expr::value(permissions.to_json()),
            );
            details.insert(
                "permissions_before".into(),
                sorted_names(&current.permissions).into(),
            );
            details.insert("permissions".into(), permissions.to_json());
        }
        // The version the decision above was made on, whatever the client sent: a role changed
        // in between is re-read and re-decided by the client.
        let changed = update
            .filter(roles::Column::Id.eq(role_id))
            .filter(roles::Column::OrganizationId.eq(access.id()))
            .filter(roles::Column::Version.eq(current.row.version))
            .exec(&txn)
            .await
            .map_err(name_conflict)?
            .rows_affected;
        if changed != 1 {
            return Err(gone_or_changed(&txn, access, role_id).await);
        }
        audit(access, AuditAction::RoleUpdated, ("role", role_id))
            .details(serde_json::Value::Object(details))
            .record(&txn, meta)
            .await?;
        let updated = role_in_org(ctx, &txn, access, role_id).await?;
        txn.commit().await?;
        Ok(updated.into())
    }

    /// Deletes a custom role; its grants and pending invitations go with it (foreign-key
    /// cascade, same transaction). The caller must hold every permission it carries.
    #[tracing::instrument(skip_all, fields(organization_id = %access.id(), role_id = %role_id))]
    pub async fn delete(
        ctx: &AppContext,
        meta: &RequestMeta,
        access: &OrgAccess,
        granted: Granted,
        role_id: Uuid,
        expected_version: Option<i32>,
    ) -> ServiceResult<()> {
        let current = custom_role(ctx, access, role_id).await?;
        check_version(expected_version, current.row.version)?;
        ensure_may_grant(
            ctx,
            access,
            &granted.scope,
            granted.permission,
            &current.permissions,
        )
        .await?;
        let txn = crate::db::begin_write(&ctx.db).await?;
        SessionService::ensure_live(&txn, &access.principal()).await?;
        bump_authz_version(ctx, &txn, access).await?;
        // Custom roles are never `owner`, so no owner grant goes with it (no last-owner check).
        let assignments = role_assignments::Entity::find()
            .filter(role_assignments::Column::RoleId.eq(role_id))
            .count(&txn)
            .await?;
        let deleted = roles::Entity::delete_many()
            .filter(roles::Column::Id.eq(role_id))
            .filter(roles::Column::OrganizationId.eq(access.id()))
            .filter(roles::Column::Builtin.eq(false))
            .filter(roles::Column::Version.eq(current.row.version))
            .exec(&txn)
            .await?
            .rows_affected;
        if deleted != 1 {
            return Err(gone_or_changed(&txn, access, role_id).await);
        }
        audit(access, AuditAction::RoleDeleted, ("role", role_id))
            .details(serde_json::json!({
                "name": current.row.name,
                "permissions": sorted_names(&current.permissions),
                "assignments_removed": assignments,
            }))
            .record(&txn, meta)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// The organization's grants the caller may read, oldest first: all of them with
    /// `role:read` at the organization; otherwise the caller's own plus those at or below the
    /// accounts and projects where they hold `role:read`.
    pub async fn list_assignments(
        ctx: &AppContext,
        access: &OrgAccess,
        filter: &AssignmentFilter,
        page: &PageRequest,
    ) -> ServiceResult<Page<AssignmentView>> {
        let mut query = role_assignments::Entity::find()
            .filter(role_assignments::Column::OrganizationId.eq(access.id()));
        if let Some(readable) = readable_assignments(ctx, access).await? {
            query = query.filter(readable);
        }
        if let Some(user_id) = filter.user_id {
            match membership_of(&ctx.db, access.id(), user_id).await? {
                Some(m) => query = query.filter(role_assignments::Column::MembershipId.eq(m.id)),
                None => {
                    return Ok(Page::from_rows(Vec::new(), page, |a: &AssignmentView| {
                        a.row.id
                    }))
                }
            }
        }
        if let Some(scope_type) = filter.scope_type {
            query = query.filter(role_assignments::Column::ScopeType.eq(scope_type.as_str()));
        }
        if let Some(scope_id) = filter.scope_id {
            query = query.filter(role_assignments::Column::ScopeId.eq(scope_id));
        }
        if let Some(role_id) = filter.role_id {
            query = query.filter(role_assignments::Column::RoleId.eq(role_id));
        }
        if let Some(after) = page.after {
            query = query.filter(role_assignments::Column::Id.gt(after));
        }
        let rows = query
            .order_by_asc(role_assignments::Column::Id)
            .limit(page.fetch())
            .all(&ctx.db)
            .await?;
        let views = describe(&ctx.db, rows).await?;
        Ok(Page::from_rows(views, page, |a| a.row.id))
    }

    /// Grants `new.role_id` to a member at the granted scope. The caller must hold every
    /// permission of the role there (so `admin` cannot hand out `owner`).
    #[tracing::instrument(skip_all, fields(organization_id = %access.id()))]
    pub async fn assign(
        ctx: &AppContext,
        meta: &RequestMeta,
        access: &OrgAccess,
        granted: Granted,
        new: NewAssignment,
    ) -> ServiceResult<AssignmentView> {
        let scope = granted.scope;
        let role = role_in_org(ctx, &ctx.db, access, new.role_id)
            .await
            .map_err(unknown_reference("role_id", "unknown_role"))?;
        let membership = membership_of(&ctx.db, access.id(), new.user_id)
            .await?
            .ok_or_else(|| {
                ServiceError::validation(
                    "user_id",
                    "not_a_member",
                    "the user is not a member of this organization",
                )
            })?;
        ensure_may_grant(ctx, access, &scope, granted.permission, &role.permissions).await?;
        let txn = crate::db::begin_write(&ctx.db).await?;
        SessionService::ensure_live(&txn, &access.principal()).await?;
        // Serializes with every other policy change: a membership, role or scope removed since
        // the checks above makes this a 409 `concurrent_change` instead of a stale grant.
        bump_authz_version(ctx, &txn, access).await?;
        let scope_type = scope.scope_type();
        let row = role_assignments::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(access.id()),
            membership_id: Set(membership.id),
            role_id: Set(role.row.id),
            scope_type: Set(scope_type.as_str().into()),
            scope_id: Set(scope.id()),
            account_id: Set((scope_type == ScopeType::Account)
                .then_some(scope.account_id)
                .flatten()),
            project_id: Set(scope.project_id),
            granted_by: Set(Some(access.user_id)),
            created_at: Set(Utc::now()),
        }
        .insert(&txn)
        .await
        .map_err(|e| {
            if is_unique_violation(&e) {
                ServiceError::Conflict("assignment_exists")
            } else {
                e.into()
            }
        })?;
        audit(
            access,
            AuditAction::RoleAssigned,
            ("role_assignment", row.id),
        )
        .details(serde_json::json!({
            "user_id": new.user_id,
            "role_id": role.row.id,
            "role_name": role.row.name,
            "scope_type": scope_type.as_str(),
            "scope_id": scope.id(),
        }))
        .record(&txn, meta)
        .await?;
        txn.commit().await?;
        Ok(AssignmentView {
            row,
            user_id: new.user_id,
            role_name: role.row.name,
        })
    }

    /// The grant `assignment_id` of this organization and the caller's right to revoke it:
    /// `permission` (role:assign) at its scope and every permission of its role there. 404
    /// unless it exists here and the caller may read it (their own, or `role:read` at its
    /// scope), 403 when they may read it but not revoke it.
    pub async fn authorize_unassign(
        ctx: &AppContext,
        access: &OrgAccess,
        assignment_id: Uuid,
        permission: Permission,
    ) -> ServiceResult<UnassignTarget> {
        let row = role_assignments::Entity::find_by_id(assignment_id)
            .filter(role_assignments::Column::OrganizationId.eq(access.id()))
            .one(&ctx.db)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let scope = assignment_scope(&ctx.db, &row).await?;
        if !access.can(ctx, &scope, permission).await? {
            let readable = row.membership_id == access.membership_id
                || access.can(ctx, &scope, Permission::RoleRead).await?;
            return Err(if readable {
                ServiceError::Forbidden
            } else {
                ServiceError::NotFound
            });
        }
        let role = role_in_org(ctx, &ctx.db, access, row.role_id).await?;
        ensure_may_grant(ctx, access, &scope, permission, &role.permissions).await?;
        Ok(UnassignTarget {
            row,
            role,
            granted: Granted { scope, permission },
        })
    }

    /// Revokes a grant; the organization keeps at least one owner at organization scope.
    #[tracing::instrument(skip_all, fields(organization_id = %access.id()))]
    pub async fn unassign(
        ctx: &AppContext,
        meta: &RequestMeta,
        access: &OrgAccess,
        target: UnassignTarget,
    ) -> ServiceResult<()> {
        let UnassignTarget { row, role, granted } = target;
        let txn = crate::db::begin_write(&ctx.db).await?;
        SessionService::ensure_live(&txn, &access.principal()).await?;
        bump_authz_version(ctx, &txn, access).await?;
        ensure_owner_remains(&txn, access.id(), &[row.id]).await?;
        let deleted = role_assignments::Entity::delete_many()
            .filter(role_assignments::Column::Id.eq(row.id))
            .filter(role_assignments::Column::OrganizationId.eq(access.id()))
            .exec(&txn)
            .await?
            .rows_affected;
        if deleted != 1 {
            return Err(ServiceError::NotFound);
        }
        let user_id = memberships::Entity::find_by_id(row.membership_id)
            .one(&txn)
            .await?
            .map(|m| m.user_id);
        audit(
            access,
            AuditAction::RoleUnassigned,
            ("role_assignment", row.id),
        )
        .details(serde_json::json!({
            "user_id": user_id,
            "role_id": role.row.id,
            "role_name": role.row.name,
            "scope_type": granted.scope.scope_type().as_str(),
            "scope_id": granted.scope.id(),
        }))
        .record(&txn, meta)
        .await?;
        txn.commit().await?;
        Ok(())
    }
}

fn audit(access: &OrgAccess, action: AuditAction, target: (&'static str, Uuid)) -> AuditEvent {
    AuditEvent::new(action)
        .actor(access.user_id, Some(access.session_id))
        .organization(access.id())
        .target(target.0, target.1)
}

/// A custom role of this organization: 404 for another organization's, 409 `role_builtin` for
/// a built-in one (those are defined by the policy files, not the API).
async fn custom_role(
    ctx: &AppContext,
    access: &OrgAccess,
    role_id: Uuid,
) -> ServiceResult<RoleInOrg> {
    let role = role_in_org(ctx, &ctx.db, access, role_id).await?;
    if role.row.builtin {
        return Err(ServiceError::Conflict("role_builtin"));
    }
    Ok(role)
}

/// A custom role may not be named like a built-in one: grants and policy lines would be
/// ambiguous to a reader.
async fn ensure_not_builtin_name(
    ctx: &AppContext,
    conn: &impl ConnectionTrait,
    name: &RoleName,
) -> ServiceResult<()> {
    let taken = ctx.authz.policy().builtin.contains_key(name.as_str())
        || roles::Entity::find()
            .filter(roles::Column::Builtin.eq(true))
            .filter(roles::Column::Name.eq(name.as_str()))
            .count(conn)
            .await?
            > 0;
    if taken {
        Err(ServiceError::Conflict("role_name_taken"))
    } else {
        Ok(())
    }
}

fn name_conflict(err: sea_orm::DbErr) -> ServiceError {
    if is_unique_violation(&err) {
        ServiceError::Conflict("role_name_taken")
    } else {
        err.into()
    }
}

async fn gone_or_changed(
    conn: &impl ConnectionTrait,
    access: &OrgAccess,
    role_id: Uuid,
) -> ServiceError {
    match roles::Entity::find_by_id(role_id)
        .filter(roles::Column::OrganizationId.eq(access.id()))
        .one(conn)
        .await
    {
        Ok(Some(_)) => ServiceError::VersionMismatch,
        Ok(None) => ServiceError::NotFound,
        Err(e) => e.into(),
    }
}

/// The scope a grant applies at, from its own columns: deleted accounts and projects included,
/// so a grant left at one can still be revoked by whoever may revoke grants above it.
async fn assignment_scope(
    conn: &impl ConnectionTrait,
    row: &AssignmentRow,
) -> ServiceResult<Scope> {
    let org = row.organization_id;
    match (row.account_id, row.project_id) {
        (Some(account), None) => Ok(Scope::account(org, account)),
        (None, Some(project)) => {
            let account = projects::Entity::find_by_id(project)
                .filter(projects::Column::OrganizationId.eq(org))
                .select_only()
                .column(projects::Column::AccountId)
                .into_tuple::<Uuid>()
                .one(conn)
                .await?
                .ok_or(ServiceError::NotFound)?;
            Ok(Scope::project(org, account, project))
        }
        _ => Ok(Scope::organization(org)),
    }
}

/// `None` when the caller may read every grant of the organization; otherwise the condition
/// selecting those they may read.
async fn readable_assignments(
    ctx: &AppContext,
    access: &OrgAccess,
) -> ServiceResult<Option<Condition>> {
    if access
        .can(ctx, &access.org_scope(), Permission::RoleRead)
        .await?
    {
        return Ok(None);
    }
    let scopes = grant_scopes(&ctx.db, access).await?;
    let mut accounts = Vec::new();
    for (_, id) in scopes
        .iter()
        .filter(|(t, _)| t == ScopeType::Account.as_str())
    {
        if access
            .can(ctx, &Scope::account(access.id(), *id), Permission::RoleRead)
            .await?
        {
            accounts.push(*id);
        }
    }
    let project_ids: Vec<Uuid> = scopes
        .iter()
        .filter(|(t, _)| t == ScopeType::Project.as_str())
        .map(|(_, id)| *id)
        .collect();
    let mut project_grants = Vec::new();
    if !project_ids.is_empty() {
        let rows: Vec<(Uuid, Uuid)> = projects::Entity::find()
            .select_only()
            .column(projects::Column::Id)
            .column(projects::Column::AccountId)
            .filter(projects::Column::OrganizationId.eq(access.id()))
            .filter(projects::Column::Id.is_in(project_ids))
            .into_tuple()
            .all(&ctx.db)
            .await?;
        for (project, account) in rows {
            let scope = Scope::project(access.id(), account, project);
            if access.can(ctx, &scope, Permission::RoleRead).await? {
                project_grants.push(project);
            }
        }
    }
    let mut readable =
        Condition::any().add(role_assignments::Column::MembershipId.eq(access.membership_id));
    if !accounts.is_empty() {
        readable = readable
            .add(role_assignments::Column::AccountId.is_in(accounts.clone()))
            .add(
                role_assignments::Column::ProjectId.in_subquery(
                    Query::select()
                        .column(projects::Column::Id)
                        .from(projects::Entity)
                        .and_where(Expr::col(projects::Column::AccountId).is_in(accounts))
                        .to_owned(),
                ),
            );
    }
    if !project_grants.is_empty() {
        readable = readable.add(role_assignments::Column::ProjectId.is_in(project_grants));
    }
    Ok(Some(readable))
}

/// Adds each grant's user and role name (two lookups for the whole page).
async fn describe(
    conn: &impl ConnectionTrait,
    rows: Vec<AssignmentRow>,
) -> ServiceResult<Vec<AssignmentView>> {
    let membership_ids: Vec<Uuid> = rows.iter().map(|r| r.membership_id).collect();
    let role_ids: Vec<Uuid> = rows.iter().map(|r| r.role_id).collect();
    let users: HashMap<Uuid, Uuid> = memberships::Entity::find()
        .select_only()
        .column(memberships::Column::Id)
        .column(memberships::Column::UserId)
        .filter(memberships::Column::Id.is_in(membership_ids))
        .into_tuple::<(Uuid, Uuid)>()
        .all(conn)
        .await?
        .into_iter()
        .collect();
    let names: HashMap<Uuid, String> = roles::Entity::find()
        .select_only()
        .column(roles::Column::Id)
        .column(roles::Column::Name)
        .filter(roles::Column::Id.is_in(role_ids))
        .into_tuple::<(Uuid, String)>()
        .all(conn)
        .await?
        .into_iter()
        .collect();
    rows.into_iter()
        .map(|row| {
            let user_id = *users.get(&row.membership_id).ok_or_else(|| {
                ServiceError::unexpected_msg("role assignment without its membership")
            })?;
            let role_name = names
                .get(&row.role_id)
                .cloned()
                .ok_or_else(|| ServiceError::unexpected_msg("role assignment without its role"))?;
            Ok(AssignmentView {
                row,
                user_id,
                role_name,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permission_sets_parse_from_the_vocabulary_only() {
        let set = PermissionSet::parse(&["project:read", "org:read", "project:read"]).unwrap();
        assert_eq!(sorted_names(set.as_set()), ["org:read", "project:read"]);
        let code = |raw: &[&str]| match PermissionSet::parse(raw) {
            Err(ServiceError::Validation(f)) => f[0].code,
            other => panic!("{other:?}"),
        };
        assert_eq!(code(&[]), "no_permissions");
        assert_eq!(code(&["org:read", "org:own"]), "unknown_permission");
        assert_eq!(code(&["ORG:READ"]), "unknown_permission");
        assert_eq!(code(&["org:read"; 101]), "too_many_permissions");
    }
}
