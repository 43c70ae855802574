//! Members of an organization: who they are and which roles they hold where, and ending a
//! membership (removal by someone with the rights to, or leaving), grants included.

use std::collections::{BTreeSet, HashMap};

use entity::{memberships, projects, role_assignments, roles, users};
use sea_orm::{ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::access::{bump_authz_version, Granted, OrgAccess};
use super::guards::{ensure_owner_remains, membership_assignment_ids, membership_of, role_in_org};
use crate::audit::{AuditAction, AuditEvent};
use crate::authz::{Permission, Scope, ScopeType};
use crate::context::{AppContext, RequestMeta};
use crate::error::{ServiceError, ServiceResult};
use crate::paging::{Page, PageRequest};
use crate::sessions::SessionService;

/// One role a member holds at one scope (a role assignment).
#[derive(Debug, Clone)]
pub struct MemberRole {
    pub assignment_id: Uuid,
    pub role_id: Uuid,
    pub role_name: String,
    pub scope_type: ScopeType,
    pub scope_id: Uuid,
}

/// A member with their grants.
#[derive(Debug, Clone)]
pub struct Member {
    pub membership_id: Uuid,
    pub user_id: Uuid,
    pub email: String,
    pub display_name: String,
    pub joined_at: chrono::DateTime<chrono::Utc>,
    pub roles: Vec<MemberRole>,
}

/// The scope a grant or invitation row names, whether or not it is still live (deleted scopes
/// still answer "who may act there" for the organization-wide grants above them). `None` when
/// the row names nothing of this organization.
pub(crate) async fn scope_of_row(
    conn: &impl ConnectionTrait,
    organization_id: Uuid,
    scope_type: &str,
    scope_id: Uuid,
) -> ServiceResult<Option<Scope>> {
    Ok(match ScopeType::parse(scope_type) {
        Some(ScopeType::Organization) if scope_id == organization_id => {
            Some(Scope::organization(organization_id))
        }
        Some(ScopeType::Account) => Some(Scope::account(organization_id, scope_id)),
        Some(ScopeType::Project) => projects::Entity::find_by_id(scope_id)
            .filter(projects::Column::OrganizationId.eq(organization_id))
            .one(conn)
            .await?
            .map(|p| Scope::project(organization_id, p.account_id, p.id)),
        _ => None,
    })
}

pub struct MemberService;

impl MemberService {
    /// The organization's members in the order they joined, each with every role they hold.
    pub async fn list(
        ctx: &AppContext,
        access: &OrgAccess,
        _granted: Granted,
        page: &PageRequest,
    ) -> ServiceResult<Page<Member>> {
        let mut query =
            memberships::Entity::find().filter(memberships::Column::OrganizationId.eq(access.id()));
        if let Some(after) = page.after {
            query = query.filter(memberships::Column::Id.gt(after));
        }
        let rows = query
            .order_by_asc(memberships::Column::Id)
            .limit(page.fetch())
            .all(&ctx.db)
            .await?;
        let page = Page::from_rows(rows, page, |m| m.id);

        let user_ids: Vec<Uuid> = page.items.iter().map(|m| m.user_id).collect();
        let membership_ids: Vec<Uuid> = page.items.iter().map(|m| m.id).collect();
        let people: HashMap<Uuid, (String, String)> = users::Entity::find()
            .select_only()
            .column(users::Column::Id)
            .column(users::Column::Email)
            .column(users::Column::DisplayName)
            .filter(users::Column::Id.is_in(user_ids))
            .into_tuple::<(Uuid, String, String)>()
            .all(&ctx.db)
            .await?
            .into_iter()
            .map(|(id, email, name)| (id, (email, name)))
            .collect();
        let grants = role_assignments::Entity::find()
            .filter(role_assignments::Column::OrganizationId.eq(access.id()))
            .filter(role_assignments::Column::MembershipId.is_in(membership_ids))
            .order_by_asc(role_assignments::Column::Id)
            .all(&ctx.db)
            .await?;
        let role_ids: BTreeSet<Uuid> = grants.iter().map(|g| g.role_id).collect();
        let role_names: HashMap<Uuid, String> = roles::Entity::find()
            .select_only()
            .column(roles::Column::Id)
            .column(roles::Column::Name)
            .filter(roles::Column::Id.is_in(role_ids))
            .into_tuple::<(Uuid, String)>()
            .all(&ctx.db)
            .await?
            .into_iter()
            .collect();
        let mut by_membership: HashMap<Uuid, Vec<MemberRole>> = HashMap::new();
        for g in grants {
            let Some(scope_type) = ScopeType::parse(&g.scope_type) else {
                continue;
            };
            by_membership
                .entry(g.membership_id)
                .or_default()
                .push(MemberRole {
                    assignment_id: g.id,
                    role_id: g.role_id,
                    role_name: role_names.get(&g.role_id).cloned().unwrap_or_default(),
                    scope_type,
                    scope_id: g.scope_id,
                });
        }
        Ok(page.map(|m| {
            let (email, display_name) = people.get(&m.user_id).cloned().unwrap_or_default();
            Member {
                membership_id: m.id,
                user_id: m.user_id,
                email,
                display_name,
                joined_at: m.created_at,
                roles: by_membership.remove(&m.id).unwrap_or_default(),
            }
        }))
    }

    /// Removes another member: the caller (holding `member:remove`, proven by `granted`) must
    /// also hold every permission of every role the member holds, at that role's scope (so an
    /// admin cannot remove an owner: 403 `escalation_denied`). The organization keeps an owner
    /// (409 `last_owner`).
    #[tracing::instrument(skip_all, fields(organization_id = %access.id(), %user_id))]
    pub async fn remove(
        ctx: &AppContext,
        meta: &RequestMeta,
        access: &OrgAccess,
        _granted: Granted,
        user_id: Uuid,
    ) -> ServiceResult<()> {
        if user_id == access.user_id {
            return Self::leave(ctx, meta, access).await;
        }
        let membership = membership_of(&ctx.db, access.id(), user_id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let grants = role_assignments::Entity::find()
            .filter(role_assignments::Column::MembershipId.eq(membership.id))
            .all(&ctx.db)
            .await?;
        let mut held_at: HashMap<Uuid, BTreeSet<Permission>> = HashMap::new();
        for grant in grants {
            let role = match role_in_org(ctx, &ctx.db, access, grant.role_id).await {
                Ok(role) => role,
                // Another organization's custom role grants nothing here.
                Err(ServiceError::NotFound) => continue,
                Err(e) => return Err(e),
            };
            let Some(scope) =
                scope_of_row(&ctx.db, access.id(), &grant.scope_type, grant.scope_id).await?
            else {
                continue;
            };
            let held = match held_at.get(&scope.id()) {
                Some(held) => held.clone(),
                None => {
                    let held: BTreeSet<Permission> =
                        access.held(ctx, &scope).await?.into_iter().collect();
                    held_at.insert(scope.id(), held.clone());
                    held
                }
            };
            if !role.permissions.is_subset(&held) {
                return Err(ServiceError::Denied("escalation_denied"));
            }
        }
        Self::end_membership(
            ctx,
            meta,
            access,
            (membership.id, user_id),
            AuditAction::MemberRemoved,
        )
        .await
    }

    /// The caller leaves the organization (no permission needed), unless they are its last
    /// owner (409 `last_owner`).
    #[tracing::instrument(skip_all, fields(organization_id = %access.id()))]
    pub async fn leave(
        ctx: &AppContext,
        meta: &RequestMeta,
        access: &OrgAccess,
    ) -> ServiceResult<()> {
        let membership = (access.membership_id, access.user_id);
        Self::end_membership(ctx, meta, access, membership, AuditAction::MemberLeft).await
    }

    /// Deletes the membership and, by cascade, its grants, in one transaction that first makes
    /// sure the decisions above still hold (authz version) and that an owner remains.
    async fn end_membership(
        ctx: &AppContext,
        meta: &RequestMeta,
        access: &OrgAccess,
        (membership_id, user_id): (Uuid, Uuid),
        action: AuditAction,
    ) -> ServiceResult<()> {
        let txn = crate::db::begin_write(&ctx.db).await?;
        SessionService::ensure_live(&txn, &access.principal()).await?;
        bump_authz_version(ctx, &txn, access).await?;
        let removed = membership_assignment_ids(&txn, membership_id).await?;
        ensure_owner_remains(&txn, access.id(), &removed).await?;
        let deleted = memberships::Entity::delete_many()
            .filter(memberships::Column::Id.eq(membership_id))
            .filter(memberships::Column::OrganizationId.eq(access.id()))
            .exec(&txn)
            .await?;
        if deleted.rows_affected != 1 {
            return Err(ServiceError::NotFound);
        }
        AuditEvent::new(action)
            .actor(access.user_id, Some(access.session_id))
            .organization(access.id())
            .target("user", user_id)
            .details(serde_json::json!({
                "membership_id": membership_id,
                "removed_assignments": removed,
            }))
            .record(&txn, meta)
            .await?;
        txn.commit().await?;
        Ok(())
    }
}
