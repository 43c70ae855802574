//! The authorization API: "may this user do P here?", asked by SaaS backends on their hot
//! paths, and the slower questions around it (what does the user hold here and why, who may do
//! P here, why was this refused).
//!
//! Who may ask: a member of the organization about themself, always; about another user, with
//! `authz:check` at the scope asked about. In an organization that requires a second factor, a
//! session opened without one may ask nothing (403 `mfa_required`), as everywhere there. An organization the caller cannot see is a 404, the
//! same whether it does not exist, was deleted, or the caller is not a member.

use std::collections::BTreeSet;

use entity::{accounts, memberships, projects, role_assignments, roles};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QueryOrder, QuerySelect};
use uuid::Uuid;

use super::{matching_lines, OrgFacts, Permission, Scope, ScopeType};
use crate::context::AppContext;
use crate::error::{ServiceError, ServiceResult};
use crate::paging::{Page, PageRequest};
use crate::principal::Principal;

/// Checks per batch, at most.
pub const MAX_BATCH: usize = 100;

/// One question: may `user_id` (the caller when absent) use `permission` at the scope?
#[derive(Debug, Clone, Copy)]
pub struct Question {
    pub organization_id: Uuid,
    pub user_id: Option<Uuid>,
    pub scope_type: ScopeType,
    pub scope_id: Uuid,
    pub permission: Permission,
}

/// Why a decision was a deny, as stable codes, nearest first.
pub mod reasons {
    /// The user is not a member of the organization.
    pub const NOT_A_MEMBER: &str = "not_a_member";
    /// The scope (or an account above it) was deleted.
    pub const OBJECT_DELETED: &str = "object_deleted";
    /// The user holds roles on this scope's path, none of which carries the permission.
    pub const ROLE_LACKS_PERMISSION: &str = "role_lacks_permission";
    /// A role carrying the permission is granted elsewhere in the organization (a sibling or a
    /// scope below), not on this scope's path.
    pub const GRANT_AT_SIBLING_SCOPE: &str = "grant_at_sibling_scope";
    /// The user holds no role anywhere on this scope's path.
    pub const NO_GRANT: &str = "no_grant";
}

/// A scope as the API names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScopeRef {
    pub scope_type: ScopeType,
    pub id: Uuid,
}

impl ScopeRef {
    /// organization → account → project down to `scope`.
    pub fn path(scope: &Scope) -> Vec<ScopeRef> {
        let mut path = vec![ScopeRef {
            scope_type: ScopeType::Organization,
            id: scope.organization_id,
        }];
        if let Some(id) = scope.account_id {
            path.push(ScopeRef {
                scope_type: ScopeType::Account,
                id,
            });
        }
        if let Some(id) = scope.project_id {
            path.push(ScopeRef {
                scope_type: ScopeType::Project,
                id,
            });
        }
        path
    }
}

/// A role a user holds, where it is granted, and what it carries.
#[derive(Debug, Clone)]
pub struct Grant {
    pub assignment_id: Uuid,
    pub membership_id: Uuid,
    pub role_id: Uuid,
    pub role_name: String,
    pub builtin: bool,
    pub granted_at: ScopeRef,
    pub permissions: BTreeSet<Permission>,
}

/// A permission held at a scope and the grants it comes from.
#[derive(Debug, Clone)]
pub struct Held {
    pub permission: Permission,
    pub sources: Vec<Grant>,
}

/// The answer of `explain`.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub allowed: bool,
    /// The policy line Casbin matched, for an allow: `p, <role>, <domain>, <permission>`.
    pub matched_policy: Option<Vec<String>>,
    /// The grants that allow it (user → membership → role → scope), for an allow.
    pub chain: Vec<Grant>,
    pub scope_path: Vec<ScopeRef>,
    pub reasons: Vec<&'static str>,
}

pub struct AuthzService;

impl AuthzService {
    /// The organization's facts, 404 unless it is live and the caller a member.
    async fn visible(
        ctx: &AppContext,
        principal: &Principal,
        organization_id: Uuid,
    ) -> ServiceResult<std::sync::Arc<OrgFacts>> {
        let facts = ctx
            .authz
            .facts(&ctx.db, organization_id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        if !facts.is_member(&ctx.db, principal.user_id).await? {
            return Err(ServiceError::NotFound);
        }
        if !facts.session_allowed(&ctx.db, principal.session_id).await? {
            // As everywhere in an organization that requires a second factor.
            return Err(ServiceError::Denied("mfa_required"));
        }
        Ok(facts)
    }

    /// One decision with the organization's facts at hand.
    async fn decide(
        ctx: &AppContext,
        facts: &OrgFacts,
        user_id: Uuid,
        scope: &Scope,
        permission: Permission,
    ) -> ServiceResult<bool> {
        ctx.authz
            .decide(&ctx.db, facts.version, user_id, scope, permission)
            .await
    }

    /// The subject of a question, once the caller may ask about them: themself always,
    /// another user with `authz:check` at the scope (403 without it).
    async fn subject(
        ctx: &AppContext,
        principal: &Principal,
        facts: &OrgFacts,
        scope: &Scope,
        user_id: Option<Uuid>,
    ) -> ServiceResult<Uuid> {
        match user_id {
            None => Ok(principal.user_id),
            Some(id) if id == principal.user_id => Ok(id),
            Some(id) => {
                if Self::decide(ctx, facts, principal.user_id, scope, Permission::AuthzCheck)
                    .await?
                {
                    Ok(id)
                } else {
                    Err(ServiceError::Forbidden)
                }
            }
        }
    }

    /// The live scope a question names (404 if there is none).
    async fn scope(
        ctx: &AppContext,
        facts: &OrgFacts,
        scope_type: ScopeType,
        id: Uuid,
    ) -> ServiceResult<Scope> {
        facts
            .scope(&ctx.db, scope_type, id)
            .await?
            .ok_or(ServiceError::NotFound)
    }

    /// May the user do it? Served from memory once the organization's answers are warm.
    pub async fn check(
        ctx: &AppContext,
        principal: &Principal,
        q: &Question,
    ) -> ServiceResult<bool> {
        let facts = Self::visible(ctx, principal, q.organization_id).await?;
        let scope = Self::scope(ctx, &facts, q.scope_type, q.scope_id).await?;
        let subject = Self::subject(ctx, principal, &facts, &scope, q.user_id).await?;
        // The caller's own membership was established by `visible`.
        if subject != principal.user_id && !facts.is_member(&ctx.db, subject).await? {
            return Ok(false);
        }
        Self::decide(ctx, &facts, subject, &scope, q.permission).await
    }

    /// Up to [`MAX_BATCH`] checks, answered in order; the first question that cannot be asked
    /// fails the batch (its index is returned with the error).
    pub async fn check_batch(
        ctx: &AppContext,
        principal: &Principal,
        questions: &[Question],
    ) -> Result<Vec<bool>, (usize, ServiceError)> {
        let mut answers = Vec::with_capacity(questions.len());
        for (i, q) in questions.iter().enumerate() {
            answers.push(Self::check(ctx, principal, q).await.map_err(|e| (i, e))?);
        }
        Ok(answers)
    }

    /// Every permission the user holds at the scope, with the grants each comes from.
    pub async fn permissions(
        ctx: &AppContext,
        principal: &Principal,
        organization_id: Uuid,
        scope_type: ScopeType,
        scope_id: Uuid,
        user_id: Option<Uuid>,
    ) -> ServiceResult<Vec<Held>> {
        let facts = Self::visible(ctx, principal, organization_id).await?;
        let scope = Self::scope(ctx, &facts, scope_type, scope_id).await?;
        let subject = Self::subject(ctx, principal, &facts, &scope, user_id).await?;
        // The caller's own membership was established by `visible`.
        if subject != principal.user_id && !facts.is_member(&ctx.db, subject).await? {
            return Ok(Vec::new());
        }
        let held = ctx
            .authz
            .permissions_at(&ctx.db, facts.version, subject, &scope)
            .await?;
        let on_path = grants(ctx, organization_id, subject)
            .await?
            .into_iter()
            .filter(|g| ScopeRef::path(&scope).contains(&g.granted_at))
            .collect::<Vec<_>>();
        Ok(held
            .into_iter()
            .map(|permission| Held {
                permission,
                sources: on_path
                    .iter()
                    .filter(|g| g.permissions.contains(&permission))
                    .cloned()
                    .collect(),
            })
            .collect())
    }

    /// The members who may use `permission` at the scope, by user id, one page at a time.
    /// Needs `authz:check` there.
    pub async fn subjects(
        ctx: &AppContext,
        principal: &Principal,
        organization_id: Uuid,
        scope_type: ScopeType,
        scope_id: Uuid,
        permission: Permission,
        page: &PageRequest,
    ) -> ServiceResult<Page<Uuid>> {
        const CANDIDATES: u64 = 500;
        let facts = Self::visible(ctx, principal, organization_id).await?;
        let scope = Self::scope(ctx, &facts, scope_type, scope_id).await?;
        if !Self::decide(
            ctx,
            &facts,
            principal.user_id,
            &scope,
            Permission::AuthzCheck,
        )
        .await?
        {
            return Err(ServiceError::Forbidden);
        }
        // Every member is asked (the policy, not this code, says who qualifies), in id order,
        // until the page is full or the members run out.
        let mut found = Vec::new();
        let mut after = page.after;
        loop {
            let mut q = memberships::Entity::find()
                .select_only()
                .column(memberships::Column::UserId)
                .filter(memberships::Column::OrganizationId.eq(organization_id))
                .order_by_asc(memberships::Column::UserId)
                .limit(CANDIDATES);
            if let Some(after) = after {
                q = q.filter(memberships::Column::UserId.gt(after));
            }
            let candidates: Vec<Uuid> = q.into_tuple().all(&ctx.db).await?;
            let exhausted = (candidates.len() as u64) < CANDIDATES;
            for user in candidates {
                after = Some(user);
                if Self::decide(ctx, &facts, user, &scope, permission).await? {
                    found.push(user);
                    if found.len() as u64 == page.fetch() {
                        return Ok(Page::from_rows(found, page, |u| *u));
                    }
                }
            }
            if exhausted {
                return Ok(Page::from_rows(found, page, |u| *u));
            }
        }
    }

    /// The decision with what led to it; the same rules as [`Self::check`] for who may ask.
    /// A scope that was deleted is explained (`object_deleted`), not a 404.
    pub async fn explain(
        ctx: &AppContext,
        principal: &Principal,
        q: &Question,
    ) -> ServiceResult<Explanation> {
        let facts = Self::visible(ctx, principal, q.organization_id).await?;
        let (scope, deleted) = any_scope(&ctx.db, q.organization_id, q.scope_type, q.scope_id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let subject = Self::subject(ctx, principal, &facts, &scope, q.user_id).await?;
        let scope_path = ScopeRef::path(&scope);
        let denied = |reason| Explanation {
            allowed: false,
            matched_policy: None,
            chain: Vec::new(),
            scope_path: scope_path.clone(),
            reasons: vec![reason],
        };
        // The caller's own membership was established by `visible`.
        if subject != principal.user_id && !facts.is_member(&ctx.db, subject).await? {
            return Ok(denied(reasons::NOT_A_MEMBER));
        }
        if deleted {
            return Ok(denied(reasons::OBJECT_DELETED));
        }
        let allowed = Self::decide(ctx, &facts, subject, &scope, q.permission).await?;
        let matched = if allowed {
            let lines = ctx.authz.lines(&ctx.db, q.organization_id).await?;
            matching_lines(&ctx.authz.policy(), &lines, subject, &scope, q.permission).await?
        } else {
            Vec::new()
        };
        let all = grants(ctx, q.organization_id, subject).await?;
        let (on_path, elsewhere): (Vec<Grant>, Vec<Grant>) = all
            .into_iter()
            .partition(|g| scope_path.contains(&g.granted_at));
        if allowed {
            return Ok(Explanation {
                allowed,
                matched_policy: matched.into_iter().next(),
                chain: on_path
                    .into_iter()
                    .filter(|g| g.permissions.contains(&q.permission))
                    .collect(),
                scope_path,
                reasons: Vec::new(),
            });
        }
        let mut why = Vec::new();
        if !on_path.is_empty() {
            why.push(reasons::ROLE_LACKS_PERMISSION);
        }
        if elsewhere
            .iter()
            .any(|g| g.permissions.contains(&q.permission))
        {
            why.push(reasons::GRANT_AT_SIBLING_SCOPE);
        }
        if on_path.is_empty() && why.is_empty() {
            why.push(reasons::NO_GRANT);
        }
        Ok(Explanation {
            reasons: why,
            ..denied(reasons::NO_GRANT)
        })
    }
}

/// Every grant of `user_id` in the organization, with its role's permissions. Grants at a
/// deleted account or project are left out (they grant nothing).
async fn grants(
    ctx: &AppContext,
    organization_id: Uuid,
    user_id: Uuid,
) -> ServiceResult<Vec<Grant>> {
    let policy = ctx.authz.policy();
    let Some(membership) = memberships::Entity::find()
        .filter(memberships::Column::OrganizationId.eq(organization_id))
        .filter(memberships::Column::UserId.eq(user_id))
        .one(&ctx.db)
        .await?
    else {
        return Ok(Vec::new());
    };
    let assignments = role_assignments::Entity::find()
        .filter(role_assignments::Column::MembershipId.eq(membership.id))
        .order_by_asc(role_assignments::Column::CreatedAt)
        .all(&ctx.db)
        .await?;
    let role_ids: Vec<Uuid> = assignments.iter().map(|a| a.role_id).collect();
    let roles: std::collections::HashMap<Uuid, roles::Model> = roles::Entity::find()
        .filter(roles::Column::Id.is_in(role_ids))
        .all(&ctx.db)
        .await?
        .into_iter()
        .map(|r| (r.id, r))
        .collect();
    let rows = assignments
        .into_iter()
        .map(|a| {
            let role = roles.get(&a.role_id).cloned();
            (a, role)
        })
        .collect::<Vec<_>>();
    let mut out = Vec::new();
    for (assignment, role) in rows {
        let Some(role) = role else { continue };
        let Some(scope_type) = ScopeType::parse(&assignment.scope_type) else {
            continue;
        };
        if any_scope(&ctx.db, organization_id, scope_type, assignment.scope_id)
            .await?
            .is_none_or(|(_, deleted)| deleted)
        {
            continue;
        }
        let permissions = if role.builtin {
            policy
                .builtin_permissions(&role.name)
                .cloned()
                .unwrap_or_default()
        } else {
            role.permissions
                .as_ref()
                .and_then(|p| p.as_array())
                .into_iter()
                .flatten()
                .filter_map(|p| p.as_str()?.parse().ok())
                .collect()
        };
        out.push(Grant {
            assignment_id: assignment.id,
            membership_id: assignment.membership_id,
            role_id: role.id,
            role_name: role.name,
            builtin: role.builtin,
            granted_at: ScopeRef {
                scope_type,
                id: assignment.scope_id,
            },
            permissions,
        });
    }
    Ok(out)
}

/// A scope of the organization whether live or deleted: the scope, and whether it or an account
/// above it is deleted. `None` when no such scope exists in this organization.
async fn any_scope(
    db: &DatabaseConnection,
    organization_id: Uuid,
    scope_type: ScopeType,
    id: Uuid,
) -> ServiceResult<Option<(Scope, bool)>> {
    let account = |account_id: Uuid| async move {
        accounts::Entity::find_by_id(account_id)
            .filter(accounts::Column::OrganizationId.eq(organization_id))
            .one(db)
            .await
    };
    Ok(match scope_type {
        ScopeType::Organization => {
            (id == organization_id).then(|| (Scope::organization(id), false))
        }
        ScopeType::Account => account(id).await?.map(|a| {
            (
                Scope::account(organization_id, a.id),
                a.deleted_at.is_some(),
            )
        }),
        ScopeType::Project => {
            let Some(p) = projects::Entity::find_by_id(id)
                .filter(projects::Column::OrganizationId.eq(organization_id))
                .one(db)
                .await?
            else {
                return Ok(None);
            };
            let account_deleted = account(p.account_id)
                .await?
                .is_none_or(|a| a.deleted_at.is_some());
            Some((
                Scope::project(organization_id, p.account_id, p.id),
                p.deleted_at.is_some() || account_deleted,
            ))
        }
    })
}
