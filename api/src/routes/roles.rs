//! `/v1/orgs/{org_id}/roles` and `/v1/orgs/{org_id}/role-assignments`: custom roles and grants.
//! Each handler resolves the caller's standing in the organization, checks the permission its
//! operation declares (`x-required-permission`), parses, calls one service function and responds.

use actix_web::http::{header, StatusCode};
use actix_web::{delete, get, patch, post, web, HttpRequest, HttpResponse};
use service::authz::{Permission, ScopeType};
use service::domain::{parse_description, RoleName};
use service::paging::PageRequest;
use service::tenancy::guards::unknown_reference;
use service::tenancy::read_permission_for;
use service::tenancy::roles::{
    scope_read_permission, AssignmentFilter, NewAssignment, NewRole, PermissionSet, RolePatch,
    RoleService,
};
use service::tenancy::OrgAccess;
use service::AppContext;
use uuid::Uuid;

use crate::dto::roles::{
    AssignmentListQuery, AssignmentResponse, CreateAssignmentRequest, CreateRoleRequest,
    RoleListQuery, RoleResponse, UpdateRoleRequest,
};
use crate::dto::tenancy::ListPage;
use crate::error::{ApiError, Problem};
use crate::precondition::{expected_version, optional_version};
use crate::request_context::{Authenticated, ClientMeta, Requires};
use crate::validation::all_ok;

fn role_response(status: StatusCode, role: RoleResponse) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::ETAG, format!("\"{}\"", role.version)))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(role)
}

fn new_role(body: &CreateRoleRequest) -> Result<NewRole, ApiError> {
    let (name, description, permissions) = all_ok((
        RoleName::parse(&body.name),
        parse_description(body.description.as_deref()),
        PermissionSet::parse(&body.permissions),
    ))?;
    Ok(NewRole {
        name,
        description,
        permissions,
    })
}

fn role_patch(body: &UpdateRoleRequest) -> Result<RolePatch, ApiError> {
    let (name, description, permissions) = all_ok((
        body.name.as_deref().map(RoleName::parse).transpose(),
        body.description
            .as_deref()
            .map(|d| parse_description(Some(d)))
            .transpose(),
        body.permissions
            .as_deref()
            .map(PermissionSet::parse)
            .transpose(),
    ))?;
    Ok(RolePatch {
        name,
        description,
        permissions,
    })
}

/// The roles usable in the organization: the built-in ones (read-only, by name) first, then its
/// custom roles, oldest first.
#[utoipa::path(
    tag = "roles",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("role:read"))),
    params(("org_id" = Uuid, Path, description = "Organization id"), RoleListQuery),
    responses(
        (status = 200, description = "One page; the built-in roles lead the first pages", body = ListPage<RoleResponse>),
        (status = 400, description = "Malformed id or query", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "You may not read roles here (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or you are not a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit or cursor (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/orgs/{org_id}/roles")]
pub async fn list_roles(
    ctx: web::Data<AppContext>,
    auth: Authenticated,
    required: Requires,
    path: web::Path<Uuid>,
    query: web::Query<RoleListQuery>,
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
    let page = RoleService::list(&ctx, &access, granted, &page).await?;
    Ok(HttpResponse::Ok().json(ListPage::from_page(page, RoleResponse::from)))
}

/// Define a custom role. You must hold every permission it carries.
#[utoipa::path(
    tag = "roles",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("role:manage"))),
    params(("org_id" = Uuid, Path, description = "Organization id")),
    responses(
        (status = 201, description = "Created; `ETag` carries its version", body = RoleResponse),
        (status = 403, description = "You may not manage roles (`forbidden`), or the role carries a permission you do not hold (`escalation_denied`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or you are not a member", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Name taken by a built-in or custom role (`role_name_taken`), or the organization's policy changed concurrently (`concurrent_change`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name or description, no or unknown permissions (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/orgs/{org_id}/roles")]
pub async fn create_role(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
    required: Requires,
    path: web::Path<Uuid>,
    body: web::Json<CreateRoleRequest>,
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
    let new = new_role(&body)?;
    let role = RoleService::create(&ctx, &meta.0, &access, granted, new).await?;
    Ok(role_response(StatusCode::CREATED, role.into()))
}

/// One role: built-in, or a custom role of this organization.
#[utoipa::path(
    tag = "roles",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("role:read"))),
    params(("org_id" = Uuid, Path, description = "Organization id"), ("role_id" = Uuid, Path, description = "Role id")),
    responses(
        (status = 200, description = "The role; `ETag` carries its version", body = RoleResponse),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "You may not read roles here (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such role here, or you are not a member", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/orgs/{org_id}/roles/{role_id}")]
pub async fn get_role(
    ctx: web::Data<AppContext>,
    auth: Authenticated,
    required: Requires,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (org_id, role_id) = path.into_inner();
    let access = OrgAccess::load(&ctx, &auth.0, org_id).await?;
    let granted = require_on_role(&ctx, &access, role_id, required).await?;
    let role = RoleService::get(&ctx, &access, granted, role_id).await?;
    Ok(role_response(StatusCode::OK, role.into()))
}

/// A role of this organization exists (404 otherwise), then `required` at the organization:
/// 404 if the caller may not even read roles, 403 if they may read but not do this.
async fn require_on_role(
    ctx: &AppContext,
    access: &OrgAccess,
    role_id: Uuid,
    required: Requires,
) -> Result<service::tenancy::Granted, ApiError> {
    service::tenancy::guards::role_in_org(ctx, &ctx.db, access, role_id).await?;
    Ok(access
        .require(ctx, &access.org_scope(), required.0, Permission::RoleRead)
        .await?)
}

/// Edit a custom role (optimistic locking: `version` or `If-Match`). You must hold every
/// permission it carries, before and after.
#[utoipa::path(
    tag = "roles",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("role:manage"))),
    params(("org_id" = Uuid, Path, description = "Organization id"), ("role_id" = Uuid, Path, description = "Role id"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|(W/)?"[1-9][0-9]{0,8}")$"#,
        description = "Quoted version from the ETag; `*` for whatever is current")),
    responses(
        (status = 200, description = "Updated", body = RoleResponse),
        (status = 400, description = "Malformed id or If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "You may not manage roles (`forbidden`), or the role carries a permission you do not hold (`escalation_denied`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such role here, or you are not a member", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A built-in role (`role_builtin`), name taken (`role_name_taken`), or the organization's policy changed concurrently (`concurrent_change`)", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Changed since that version (`version_mismatch`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid name or description, no or unknown permissions (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
        (status = 428, description = "No version given (`precondition_required`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/orgs/{org_id}/roles/{role_id}")]
pub async fn update_role(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
    required: Requires,
    req: HttpRequest,
    path: web::Path<(Uuid, Uuid)>,
    body: web::Json<UpdateRoleRequest>,
) -> Result<HttpResponse, ApiError> {
    let (org_id, role_id) = path.into_inner();
    let access = OrgAccess::load(&ctx, &auth.0, org_id).await?;
    let granted = require_on_role(&ctx, &access, role_id, required).await?;
    let version = expected_version(body.version, req.headers())?;
    let patch = role_patch(&body)?;
    let role =
        RoleService::update(&ctx, &meta.0, &access, granted, role_id, version, patch).await?;
    Ok(role_response(StatusCode::OK, role.into()))
}

/// Delete a custom role; its grants and pending invitations go with it. You must hold every
/// permission it carries.
#[utoipa::path(
    tag = "roles",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("role:manage"))),
    params(("org_id" = Uuid, Path, description = "Organization id"), ("role_id" = Uuid, Path, description = "Role id"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|(W/)?"[1-9][0-9]{0,8}")$"#,
        description = "Checked when given")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id or If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "You may not manage roles (`forbidden`), or the role carries a permission you do not hold (`escalation_denied`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such role here, or you are not a member", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "A built-in role (`role_builtin`), or the organization's policy changed concurrently (`concurrent_change`)", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Changed since that version (`version_mismatch`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/orgs/{org_id}/roles/{role_id}")]
pub async fn delete_role(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
    required: Requires,
    req: HttpRequest,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (org_id, role_id) = path.into_inner();
    let access = OrgAccess::load(&ctx, &auth.0, org_id).await?;
    let granted = require_on_role(&ctx, &access, role_id, required).await?;
    let version = optional_version(req.headers())?;
    RoleService::delete(&ctx, &meta.0, &access, granted, role_id, version).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// The organization's role assignments you may read, oldest first: every one with `role:read`
/// at the organization; otherwise your own, plus those at or below the accounts and projects
/// where you hold `role:read`.
#[utoipa::path(
    tag = "roles",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("role:read"))),
    params(("org_id" = Uuid, Path, description = "Organization id"), AssignmentListQuery),
    responses(
        (status = 200, description = "One page", body = ListPage<AssignmentResponse>),
        (status = 400, description = "Malformed id or query", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or you are not a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit or cursor, or only one of `scope_type` and `scope_id` (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/orgs/{org_id}/role-assignments")]
pub async fn list_assignments(
    ctx: web::Data<AppContext>,
    auth: Authenticated,
    path: web::Path<Uuid>,
    query: web::Query<AssignmentListQuery>,
) -> Result<HttpResponse, ApiError> {
    let access = OrgAccess::load(&ctx, &auth.0, path.into_inner()).await?;
    let page = PageRequest::parse(query.limit, query.cursor.as_deref())?;
    let filter = AssignmentFilter {
        user_id: query.user_id,
        scope_type: query.scope_type.map(ScopeType::from),
        scope_id: query.scope_id,
        role_id: query.role_id,
    };
    let page = RoleService::list_assignments(&ctx, &access, &filter, &page).await?;
    Ok(HttpResponse::Ok().json(ListPage::from_page(page, AssignmentResponse::from)))
}

/// Grant a role to a member at a scope (and everything below it). You must hold every
/// permission of the role there.
#[utoipa::path(
    tag = "roles",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("role:assign"))),
    params(("org_id" = Uuid, Path, description = "Organization id")),
    responses(
        (status = 201, description = "Granted", body = AssignmentResponse),
        (status = 403, description = "You may see the scope but not grant there (`forbidden`), or the role carries a permission you do not hold there (`escalation_denied`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, scope or role here, or not one you may read", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The member already has this role at this scope (`assignment_exists`), or the organization's policy changed concurrently (`concurrent_change`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The user is not a member (`validation_failed`, `not_a_member`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/orgs/{org_id}/role-assignments")]
pub async fn create_assignment(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
    required: Requires,
    path: web::Path<Uuid>,
    body: web::Json<CreateAssignmentRequest>,
) -> Result<HttpResponse, ApiError> {
    let access = OrgAccess::load(&ctx, &auth.0, path.into_inner()).await?;
    let unknown_scope = unknown_reference("scope", "unknown_scope");
    let scope = access
        .resolve_scope(&ctx.db, body.scope.type_.into(), body.scope.id)
        .await
        .map_err(&unknown_scope)?;
    let granted = access
        .require(&ctx, &scope, required.0, scope_read_permission(&scope))
        .await
        .map_err(&unknown_scope)?;
    let new = NewAssignment {
        user_id: body.user_id,
        role_id: body.role_id,
    };
    let assignment = RoleService::assign(&ctx, &meta.0, &access, granted, new).await?;
    Ok(HttpResponse::Created()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(AssignmentResponse::from(assignment)))
}

/// Revoke a role assignment. You must hold `role:assign` and every permission of its role at
/// its scope; the organization keeps at least one owner.
#[utoipa::path(
    tag = "roles",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("role:assign"))),
    params(("org_id" = Uuid, Path, description = "Organization id"), ("assignment_id" = Uuid, Path, description = "Role assignment id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "You may see it but not revoke it (`forbidden`), or its role carries a permission you do not hold (`escalation_denied`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such assignment here, or not one you may read", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "It is the organization's last owner (`last_owner`), or the organization's policy changed concurrently (`concurrent_change`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/orgs/{org_id}/role-assignments/{assignment_id}")]
pub async fn delete_assignment(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
    required: Requires,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (org_id, assignment_id) = path.into_inner();
    let access = OrgAccess::load(&ctx, &auth.0, org_id).await?;
    let target = RoleService::authorize_unassign(&ctx, &access, assignment_id, required.0).await?;
    RoleService::unassign(&ctx, &meta.0, &access, target).await?;
    Ok(HttpResponse::NoContent().finish())
}
