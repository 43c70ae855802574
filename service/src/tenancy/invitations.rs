//! Invitations: an offer, delivered only by mail, to join an organization with a role at a
//! scope. The token is random, single use and expiring; only its SHA-256 is stored, and it never
//! appears in an API response or the log.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use entity::{invitations, memberships, organizations, role_assignments, users};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, Condition, ConnectionTrait, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use uuid::Uuid;

use super::access::{bump_authz_version_of, Granted, OrgAccess};
use super::guards::{ensure_may_grant, membership_of, role_in_org, unknown_reference};
use super::members::{scope_of_row, MemberRole};
use crate::audit::{AuditAction, AuditEvent};
use crate::authz::{Permission, Scope, ScopeType};
use crate::context::{AppContext, RequestMeta};
use crate::domain::Email;
use crate::error::{ServiceError, ServiceResult};
use crate::mail::{Mail, MailKind};
use crate::paging::{Page, PageRequest};
use crate::principal::Principal;
use crate::sessions::SessionService;
use crate::tokens::hash_token;
use crate::users::UserService;

pub use invitations::Model as Invitation;

/// How long an invitation stays valid: 60 seconds to 30 days, 7 days unless asked otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvitationTtl(Duration);

impl InvitationTtl {
    pub const MIN_SECS: i64 = 60;
    pub const MAX_SECS: i64 = 30 * 24 * 3600;
    pub const DEFAULT_SECS: i64 = 7 * 24 * 3600;

    pub fn parse(expires_in: Option<i64>) -> ServiceResult<Self> {
        match expires_in.unwrap_or(Self::DEFAULT_SECS) {
            secs @ Self::MIN_SECS..=Self::MAX_SECS => Ok(Self(Duration::seconds(secs))),
            _ => Err(ServiceError::validation(
                "expires_in",
                "invalid_expires_in",
                format!(
                    "expires_in must be between {} and {} seconds",
                    Self::MIN_SECS,
                    Self::MAX_SECS
                ),
            )),
        }
    }

    pub fn duration(self) -> Duration {
        self.0
    }
}

/// Where an invitation stands; derived from its timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvitationStatus {
    Pending,
    Accepted,
    Revoked,
    Expired,
}

impl InvitationStatus {
    pub fn of(invitation: &Invitation, now: DateTime<Utc>) -> Self {
        if invitation.accepted_at.is_some() {
            Self::Accepted
        } else if invitation.revoked_at.is_some() {
            Self::Revoked
        } else if invitation.expires_at <= now {
            Self::Expired
        } else {
            Self::Pending
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Accepted => "accepted",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }

    /// The condition selecting invitations in this state at `now`.
    fn condition(self, now: DateTime<Utc>) -> Condition {
        use invitations::Column as C;
        let open = Condition::all()
            .add(C::AcceptedAt.is_null())
            .add(C::RevokedAt.is_null());
        match self {
            Self::Accepted => Condition::all().add(C::AcceptedAt.is_not_null()),
            Self::Revoked => Condition::all()
                .add(C::AcceptedAt.is_null())
                .add(C::RevokedAt.is_not_null()),
            Self::Expired => open.add(C::ExpiresAt.lte(now)),
            Self::Pending => open.add(C::ExpiresAt.gt(now)),
        }
    }

    /// The conflict answering an attempt to use an invitation in this state.
    fn refusal(self) -> ServiceError {
        match self {
            Self::Accepted => ServiceError::Conflict("invitation_used"),
            Self::Revoked => ServiceError::Conflict("invitation_revoked"),
            Self::Expired => ServiceError::Conflict("invitation_expired"),
            Self::Pending => ServiceError::Conflict("concurrent_change"),
        }
    }
}

/// An invitation to create: who, with which role (the scope comes with the [`Granted`] proof).
#[derive(Debug, Clone)]
pub struct NewInvitation {
    pub email: Email,
    pub role_id: Uuid,
    pub ttl: InvitationTtl,
}

/// What accepting an invitation made of the caller.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub organization_id: Uuid,
    pub membership: memberships::Model,
    /// Whether the membership was created by this acceptance (else the caller was a member).
    pub joined: bool,
    pub assignment: MemberRole,
}

/// The permission that decides, for a caller lacking the one asked for at `scope`, between 403
/// (they may read what is there) and 404.
pub fn read_permission_at(scope: &Scope) -> Permission {
    match scope.scope_type() {
        ScopeType::Organization => Permission::OrgRead,
        ScopeType::Account => Permission::AccountRead,
        ScopeType::Project => Permission::ProjectRead,
    }
}

/// A new invitation token: 256 random bits, base64url.
fn new_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

pub struct InvitationService;

impl InvitationService {
    /// Invites `new.email` with a role at the granted scope and mails them the link. The caller
    /// must hold `member:invite` and every permission of the role there (403
    /// `escalation_denied`); someone already a member is 409 `already_member`.
    #[tracing::instrument(skip_all, fields(organization_id = %access.id()))]
    pub async fn create(
        ctx: &AppContext,
        meta: &RequestMeta,
        access: &OrgAccess,
        granted: Granted,
        new: NewInvitation,
    ) -> ServiceResult<Invitation> {
        let scope = granted.scope;
        let role = role_in_org(ctx, &ctx.db, access, new.role_id)
            .await
            .map_err(unknown_reference("role_id", "unknown_role"))?;
        ensure_may_grant(
            ctx,
            access,
            &scope,
            Permission::MemberInvite,
            &role.permissions,
        )
        .await?;
        let token = new_token();
        let now = Utc::now();
        let expires_at = now + new.ttl.duration();
        let txn = crate::db::begin_write(&ctx.db).await?;
        SessionService::ensure_live(&txn, &access.principal()).await?;
        // The organization and the scope may have gone since the decision.
        live_organization(&txn, access.id()).await?;
        access
            .resolve_scope(&txn, scope.scope_type(), scope.id())
            .await?;
        if let Some(user) = UserService::find_by_email(&txn, &new.email).await? {
            if membership_of(&txn, access.id(), user.id).await?.is_some() {
                return Err(ServiceError::Conflict("already_member"));
            }
        }
        let invitation = invitations::ActiveModel {
            id: Set(Uuid::now_v7()),
            organization_id: Set(access.id()),
            email: Set(new.email.as_str().to_owned()),
            role_id: Set(role.row.id),
            scope_type: Set(scope.scope_type().as_str().to_owned()),
            scope_id: Set(scope.id()),
            account_id: Set(match scope.scope_type() {
                ScopeType::Account => scope.account_id,
                _ => None,
            }),
            project_id: Set(scope.project_id),
            token_hash: Set(hash_token(&token)),
            invited_by: Set(Some(access.user_id)),
            expires_at: Set(expires_at),
            accepted_at: Set(None),
            accepted_by: Set(None),
            revoked_at: Set(None),
            created_at: Set(now),
        }
        .insert(&txn)
        .await?;
        let org_name = &access.organization.name;
        let link = format!("{}/invitations/accept?token={token}", ctx.public_url());
        let queued = ctx
            .mailer
            .send(
                &txn,
                Mail {
                    to: invitation.email.clone(),
                    kind: MailKind::Invitation,
                    subject: format!(
                        "You are invited to join {} on Tessera",
                        crate::mail::shorten(org_name, 60)
                    ),
                    body: format!(
                        "You have been invited to join {org_name} with the role {role}.\n\n\
                         Sign in (or create an account) with this address, then accept:\n\
                         {link}\n\n\
                         The invitation expires at {expires}. If you did not expect it, \
                         ignore this message.\n",
                        role = role.row.name,
                        expires = expires_at.to_rfc3339(),
                    ),
                },
            )
            .await?;
        AuditEvent::new(AuditAction::InvitationCreated)
            .actor(access.user_id, Some(access.session_id))
            .organization(access.id())
            .target("invitation", invitation.id)
            .details(serde_json::json!({
                "email": invitation.email,
                "role_id": invitation.role_id,
                "scope_type": invitation.scope_type,
                "scope_id": invitation.scope_id,
                "expires_at": invitation.expires_at,
            }))
            .record(&txn, meta)
            .await?;
        txn.commit().await?;
        queued.after_commit(&ctx.mailer, &ctx.background);
        Ok(invitation)
    }

    /// The organization's invitations, oldest first, optionally only those in one state.
    pub async fn list(
        ctx: &AppContext,
        access: &OrgAccess,
        _granted: Granted,
        status: Option<InvitationStatus>,
        page: &PageRequest,
    ) -> ServiceResult<Page<Invitation>> {
        let mut query =
            invitations::Entity::find().filter(invitations::Column::OrganizationId.eq(access.id()));
        if let Some(status) = status {
            query = query.filter(status.condition(Utc::now()));
        }
        if let Some(after) = page.after {
            query = query.filter(invitations::Column::Id.gt(after));
        }
        let rows = query
            .order_by_asc(invitations::Column::Id)
            .limit(page.fetch())
            .all(&ctx.db)
            .await?;
        Ok(Page::from_rows(rows, page, |i| i.id))
    }

    /// An invitation of this organization and the scope it invites to (for the handler to
    /// authorize against); 404 for another organization's.
    pub async fn get(
        ctx: &AppContext,
        access: &OrgAccess,
        id: Uuid,
    ) -> ServiceResult<(Invitation, Scope)> {
        let invitation = invitations::Entity::find_by_id(id)
            .filter(invitations::Column::OrganizationId.eq(access.id()))
            .one(&ctx.db)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let scope = scope_of_row(
            &ctx.db,
            access.id(),
            &invitation.scope_type,
            invitation.scope_id,
        )
        .await?
        .ok_or(ServiceError::NotFound)?;
        Ok((invitation, scope))
    }

    /// Revokes a pending invitation (409 `invitation_not_pending` otherwise).
    #[tracing::instrument(skip_all, fields(organization_id = %access.id(), invitation_id = %invitation.id))]
    pub async fn revoke(
        ctx: &AppContext,
        meta: &RequestMeta,
        access: &OrgAccess,
        _granted: Granted,
        invitation: &Invitation,
    ) -> ServiceResult<()> {
        let now = Utc::now();
        let txn = crate::db::begin_write(&ctx.db).await?;
        SessionService::ensure_live(&txn, &access.principal()).await?;
        let updated = invitations::Entity::update_many()
            .col_expr(invitations::Column::RevokedAt, Expr::value(now))
            .filter(invitations::Column::Id.eq(invitation.id))
            .filter(invitations::Column::OrganizationId.eq(access.id()))
            .filter(InvitationStatus::Pending.condition(now))
            .exec(&txn)
            .await?;
        if updated.rows_affected != 1 {
            return Err(ServiceError::Conflict("invitation_not_pending"));
        }
        AuditEvent::new(AuditAction::InvitationRevoked)
            .actor(access.user_id, Some(access.session_id))
            .organization(access.id())
            .target("invitation", invitation.id)
            .details(serde_json::json!({ "email": invitation.email }))
            .record(&txn, meta)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Accepts the invitation `token` names, for the signed-in caller whose email it was sent
    /// to: they become a member (if not yet) with its role at its scope, and their email counts
    /// as verified. Refused when the inviter may no longer grant that role there (409
    /// `inviter_lacks_rights`). One transaction claims the invitation (so of many concurrent
    /// acceptances exactly one succeeds), checks that the organization's policy has not moved
    /// since the inviter's rights were checked, and writes membership, grant and audit.
    #[tracing::instrument(skip_all, fields(user_id = %principal.user_id))]
    pub async fn accept(
        ctx: &AppContext,
        meta: &RequestMeta,
        principal: &Principal,
        token: &str,
    ) -> ServiceResult<Accepted> {
        let invitation = invitations::Entity::find()
            .filter(invitations::Column::TokenHash.eq(hash_token(token)))
            .one(&ctx.db)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let user = UserService::get(&ctx.db, principal.user_id).await?;
        // Emails are stored lower-cased on both sides.
        if user.email != invitation.email {
            return Err(ServiceError::Denied("invitation_email_mismatch"));
        }
        let status = InvitationStatus::of(&invitation, Utc::now());
        if status != InvitationStatus::Pending {
            return Err(status.refusal());
        }
        let organization = live_organization(&ctx.db, invitation.organization_id).await?;
        let (inviter, scope, role) = Self::inviter_still_may_grant(ctx, &invitation, organization)
            .await?
            .ok_or(ServiceError::Conflict("inviter_lacks_rights"))?;
        let org_id = invitation.organization_id;

        let now = Utc::now();
        let txn = crate::db::begin_write(&ctx.db).await?;
        SessionService::ensure_live(&txn, principal).await?;
        // Claim the invitation first: concurrent acceptances queue on its row (PostgreSQL) or
        // the write lock (SQLite), and all but the first find it taken.
        let claimed = invitations::Entity::update_many()
            .col_expr(invitations::Column::AcceptedAt, Expr::value(now))
            .col_expr(invitations::Column::AcceptedBy, Expr::value(user.id))
            .filter(invitations::Column::Id.eq(invitation.id))
            .filter(InvitationStatus::Pending.condition(now))
            .exec(&txn)
            .await?;
        if claimed.rows_affected != 1 {
            let current = invitations::Entity::find_by_id(invitation.id)
                .one(&txn)
                .await?
                .ok_or(ServiceError::NotFound)?;
            return Err(InvitationStatus::of(&current, now).refusal());
        }
        // The inviter's rights were checked at this version: any grant, role, membership or
        // scope change since (including the organization's deletion) makes this a 409.
        bump_authz_version_of(ctx, &txn, org_id, inviter.organization.authz_version).await?;
        inviter
            .resolve_scope(&txn, scope.scope_type(), scope.id())
            .await?;
        let (membership, joined) = match membership_of(&txn, org_id, user.id).await? {
            Some(m) => (m, false),
            None => {
                let m = memberships::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    organization_id: Set(org_id),
                    user_id: Set(user.id),
                    created_at: Set(now),
                }
                .insert(&txn)
                .await?;
                (m, true)
            }
        };
        let existing = role_assignments::Entity::find()
            .filter(role_assignments::Column::MembershipId.eq(membership.id))
            .filter(role_assignments::Column::RoleId.eq(role.0))
            .filter(role_assignments::Column::ScopeId.eq(scope.id()))
            .one(&txn)
            .await?;
        let assignment = match existing {
            Some(a) => a,
            None => {
                role_assignments::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    organization_id: Set(org_id),
                    membership_id: Set(membership.id),
                    role_id: Set(role.0),
                    scope_type: Set(invitation.scope_type.clone()),
                    scope_id: Set(invitation.scope_id),
                    account_id: Set(invitation.account_id),
                    project_id: Set(invitation.project_id),
                    granted_by: Set(invitation.invited_by),
                    created_at: Set(now),
                }
                .insert(&txn)
                .await?
            }
        };
        // Receiving the mail proves the address.
        users::Entity::update_many()
            .col_expr(users::Column::EmailVerifiedAt, Expr::value(now))
            .col_expr(users::Column::UpdatedAt, Expr::value(now))
            .col_expr(
                users::Column::Version,
                Expr::col(users::Column::Version).add(1),
            )
            .filter(users::Column::Id.eq(user.id))
            .filter(users::Column::Email.eq(invitation.email.as_str()))
            .filter(users::Column::EmailVerifiedAt.is_null())
            .exec(&txn)
            .await?;
        AuditEvent::new(AuditAction::InvitationAccepted)
            .actor(principal.user_id, Some(principal.session_id))
            .organization(org_id)
            .target("invitation", invitation.id)
            .details(serde_json::json!({
                "membership_id": membership.id,
                "joined": joined,
                "assignment_id": assignment.id,
                "role_id": assignment.role_id,
                "scope_type": assignment.scope_type,
                "scope_id": assignment.scope_id,
                "invited_by": invitation.invited_by,
            }))
            .record(&txn, meta)
            .await?;
        txn.commit().await?;
        ctx.users.forget(&user.id);
        Ok(Accepted {
            organization_id: org_id,
            membership,
            joined,
            assignment: MemberRole {
                assignment_id: assignment.id,
                role_id: assignment.role_id,
                role_name: role.1,
                scope_type: scope.scope_type(),
                scope_id: assignment.scope_id,
            },
        })
    }

    /// The inviter's standing, the invitation's live scope and its role `(id, name)` if the
    /// inviter is still a member who holds `member:invite` and every permission of the role at
    /// that scope; `None` otherwise. Decided on the organization's current `authz_version`.
    async fn inviter_still_may_grant(
        ctx: &AppContext,
        invitation: &Invitation,
        organization: organizations::Model,
    ) -> ServiceResult<Option<(OrgAccess, Scope, (Uuid, String))>> {
        let Some(inviter_id) = invitation.invited_by else {
            return Ok(None);
        };
        let Some(membership) = membership_of(&ctx.db, organization.id, inviter_id).await? else {
            return Ok(None);
        };
        // The inviter's view of the organization, to ask the same questions the invitation's
        // creation asked (no session: it is never used to write).
        let inviter = OrgAccess {
            user_id: inviter_id,
            session_id: Uuid::nil(),
            membership_id: membership.id,
            organization,
        };
        let Some(scope_type) = ScopeType::parse(&invitation.scope_type) else {
            return Ok(None);
        };
        let scope = inviter
            .resolve_scope(&ctx.db, scope_type, invitation.scope_id)
            .await?;
        let role = match role_in_org(ctx, &ctx.db, &inviter, invitation.role_id).await {
            Ok(role) => role,
            Err(ServiceError::NotFound) => return Ok(None),
            Err(e) => return Err(e),
        };
        match ensure_may_grant(
            ctx,
            &inviter,
            &scope,
            Permission::MemberInvite,
            &role.permissions,
        )
        .await
        {
            Ok(()) => Ok(Some((inviter, scope, (role.row.id, role.row.name)))),
            Err(ServiceError::Forbidden | ServiceError::Denied(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// The organization if it is live; 404 otherwise.
async fn live_organization(
    conn: &impl ConnectionTrait,
    id: Uuid,
) -> ServiceResult<organizations::Model> {
    organizations::Entity::find_by_id(id)
        .filter(organizations::Column::DeletedAt.is_null())
        .one(conn)
        .await?
        .ok_or(ServiceError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_bounds() {
        assert_eq!(
            InvitationTtl::parse(None).unwrap().duration(),
            Duration::days(7)
        );
        assert!(InvitationTtl::parse(Some(60)).is_ok());
        assert!(InvitationTtl::parse(Some(30 * 24 * 3600)).is_ok());
        for bad in [59, 0, -1, 30 * 24 * 3600 + 1, i64::MAX] {
            assert!(InvitationTtl::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_are_long_random_and_url_safe() {
        let (a, b) = (new_token(), new_token());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }
}
