//! `/v1/orgs/{org_id}/members`, `/v1/orgs/{org_id}/invitations` and `/v1/invitations/accept`:
//! who belongs to an organization, inviting people (by mail only), and joining.

use actix_web::{delete, get, post, web, HttpResponse};
use secrecy::ExposeSecret;
use service::authz::Permission;
use service::domain::Email;
use service::paging::PageRequest;
use service::tenancy::guards::unknown_reference;
use service::tenancy::invitations::{
    read_permission_at, InvitationService, InvitationTtl, NewInvitation,
};
use service::tenancy::members::MemberService;
use service::tenancy::{read_permission_for, OrgAccess};
use service::{AppContext, ServiceError};
use uuid::Uuid;

use crate::dto::members::{
    AcceptInvitationRequest, AcceptedInvitationResponse, CreateInvitationRequest,
    InvitationListQuery, InvitationResponse, MemberListQuery, MemberResponse,
};
use crate::dto::tenancy::ListPage;
use crate::error::{ApiError, Problem};
use crate::request_context::{Authenticated, ClientMeta, Requires};
use crate::validation::all_ok;

/// The organization's members in the order they joined, each with the roles they hold and where.
#[utoipa::path(
    tag = "members",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("member:read"))),
    params(("org_id" = Uuid, Path, description = "Organization id"), MemberListQuery),
    responses(
        (status = 200, description = "One page", body = ListPage<MemberResponse>),
        (status = 400, description = "Malformed id or query", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "You may not list members (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or you are not a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit or cursor (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/orgs/{org_id}/members")]
pub async fn list_members(
    ctx: web::Data<AppContext>,
    auth: Authenticated,
    required: Requires,
    path: web::Path<Uuid>,
    query: web::Query<MemberListQuery>,
) -> Result<HttpResponse, ApiError> {
    let access = OrgAccess::load(&ctx, &auth.0, path.into_inner()).await?;
    let granted = access
        .require(
            &ctx,
            &access.org_scope(),
            required.0,
            read_permission_for(required.0),
        )
        .await?;
    let page = PageRequest::parse(query.limit, query.cursor.as_deref())?;
    let page = MemberService::list(&ctx, &access, granted, &page).await?;
    Ok(HttpResponse::Ok().json(ListPage::from_page(page, MemberResponse::from)))
}

/// Remove a member, and with them every role they hold here. Removing someone else needs
/// `member:remove` and every permission of every role they hold, at that role's scope (an admin
/// cannot remove an owner). Any member may remove themself — that is leaving, and needs no
/// permission. Nobody removes the organization's last owner, themself included.
#[utoipa::path(
    tag = "members",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("member:remove"))),
    params(("org_id" = Uuid, Path, description = "Organization id"), ("user_id" = Uuid, Path, description = "The member's user id (your own to leave)")),
    responses(
        (status = 204, description = "Removed (or left)"),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "You may not remove members (`forbidden`), or not this one: they hold a permission you lack (`escalation_denied`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, you are not a member, or they are not", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "They are the last owner (`last_owner`), or the organization's policy changed concurrently (`concurrent_change`); retry", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/orgs/{org_id}/members/{user_id}")]
pub async fn remove_member(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
    required: Requires,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (org_id, user_id) = path.into_inner();
    let access = OrgAccess::load(&ctx, &auth.0, org_id).await?;
    if user_id == access.user_id {
        MemberService::leave(&ctx, &meta.0, &access).await?;
    } else {
        // Someone who is not a member is not there (404); a member you may not see is not
        // either; one you may see but not remove is 403.
        service::tenancy::guards::membership_of(&ctx.db, access.id(), user_id)
            .await?
            .ok_or(ServiceError::NotFound)?;
        let granted = access
            .require(
                &ctx,
                &access.org_scope(),
                required.0,
                Permission::MemberRead,
            )
            .await?;
        MemberService::remove(&ctx, &meta.0, &access, granted, user_id).await?;
    }
    Ok(HttpResponse::NoContent().finish())
}

/// Invite someone by email with a role at a scope (the organization unless `scope` says
/// otherwise). The link is mailed to them and never returned: it carries a single-use token.
/// You need `member:invite` at that scope and every permission of the role there.
#[utoipa::path(
    tag = "invitations",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("member:invite"))),
    params(("org_id" = Uuid, Path, description = "Organization id")),
    responses(
        (status = 201, description = "Invited; the mail is on its way", body = InvitationResponse),
        (status = 403, description = "You may not invite there (`forbidden`), or not with that role: it carries a permission you lack there (`escalation_denied`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, you are not a member, or the role or scope is not one of this organization's that you may read", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "That address belongs to a member already (`already_member`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid email or `expires_in` (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/orgs/{org_id}/invitations")]
pub async fn create_invitation(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
    required: Requires,
    path: web::Path<Uuid>,
    body: web::Json<CreateInvitationRequest>,
) -> Result<HttpResponse, ApiError> {
    let access = OrgAccess::load(&ctx, &auth.0, path.into_inner()).await?;
    let unknown_scope = unknown_reference("scope", "unknown_scope");
    let scope = match &body.scope {
        Some(s) => access
            .resolve_scope(&ctx.db, s.type_.into(), s.id)
            .await
            .map_err(&unknown_scope)?,
        None => access.org_scope(),
    };
    let granted = access
        .require(&ctx, &scope, required.0, read_permission_at(&scope))
        .await
        .map_err(&unknown_scope)?;
    let (email, ttl) = all_ok((
        Email::parse(&body.email),
        InvitationTtl::parse(body.expires_in),
    ))?;
    let new = NewInvitation {
        email,
        role_id: body.role_id,
        ttl,
    };
    let invitation = InvitationService::create(&ctx, &meta.0, &access, granted, new).await?;
    Ok(HttpResponse::Created().json(InvitationResponse::from(invitation)))
}

/// The organization's invitations, oldest first, optionally only those in one state.
#[utoipa::path(
    tag = "invitations",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("member:read"))),
    params(("org_id" = Uuid, Path, description = "Organization id"), InvitationListQuery),
    responses(
        (status = 200, description = "One page", body = ListPage<InvitationResponse>),
        (status = 400, description = "Malformed id or query", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "You may not list invitations (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or you are not a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit or cursor (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/orgs/{org_id}/invitations")]
pub async fn list_invitations(
    ctx: web::Data<AppContext>,
    auth: Authenticated,
    required: Requires,
    path: web::Path<Uuid>,
    query: web::Query<InvitationListQuery>,
) -> Result<HttpResponse, ApiError> {
    let access = OrgAccess::load(&ctx, &auth.0, path.into_inner()).await?;
    let granted = access
        .require(
            &ctx,
            &access.org_scope(),
            required.0,
            read_permission_for(required.0),
        )
        .await?;
    let page = PageRequest::parse(query.limit, query.cursor.as_deref())?;
    let status = query.status.map(Into::into);
    let page = InvitationService::list(&ctx, &access, granted, status, &page).await?;
    Ok(HttpResponse::Ok().json(ListPage::from_page(page, InvitationResponse::from)))
}

/// Revoke a pending invitation; its link stops working. Needs `member:invite` at the scope it
/// invites to.
#[utoipa::path(
    tag = "invitations",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("member:invite"))),
    params(("org_id" = Uuid, Path, description = "Organization id"), ("invitation_id" = Uuid, Path, description = "Invitation id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "You may not revoke invitations there (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such invitation in this organization, or you are not a member", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Accepted, revoked or expired already (`invitation_not_pending`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/orgs/{org_id}/invitations/{invitation_id}")]
pub async fn revoke_invitation(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
    required: Requires,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (org_id, invitation_id) = path.into_inner();
    let access = OrgAccess::load(&ctx, &auth.0, org_id).await?;
    let (invitation, scope) = InvitationService::get(&ctx, &access, invitation_id).await?;
    // An invitation is visible to those who may list invitations (`member:read`) there.
    let granted = access
        .require(&ctx, &scope, required.0, Permission::MemberRead)
        .await?;
    InvitationService::revoke(&ctx, &meta.0, &access, granted, &invitation).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Accept an invitation with the token from its mail. You must be signed in with the address it
/// was sent to; you become a member with its role at its scope, and your email counts as
/// verified. Refused if the inviter may no longer grant that role there.
#[utoipa::path(
    tag = "invitations",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("authenticated"))),
    responses(
        (status = 200, description = "Accepted: your membership and the role granted", body = AcceptedInvitationResponse),
        (status = 403, description = "The invitation was sent to another address (`invitation_email_mismatch`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No invitation has this token, or its organization or scope is gone", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Used (`invitation_used`), revoked (`invitation_revoked`) or expired (`invitation_expired`); the inviter may no longer grant its role there (`inviter_lacks_rights`); or the organization's policy changed concurrently (`concurrent_change`), retry", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Empty or overlong token (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/invitations/accept")]
pub async fn accept_invitation(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
    body: web::Json<AcceptInvitationRequest>,
) -> Result<HttpResponse, ApiError> {
    let token = body.token.expose_secret();
    if token.is_empty() || token.len() > 256 {
        return Err(ServiceError::validation(
            "token",
            "invalid_invitation_token",
            "token must be 1 to 256 characters",
        )
        .into());
    }
    let accepted = InvitationService::accept(&ctx, &meta.0, &auth.0, token).await?;
    Ok(HttpResponse::Ok().json(AcceptedInvitationResponse::from(accepted)))
}
