//! `/v1/orgs/...`: organizations, their accounts and the accounts' projects. Each handler
//! resolves the caller's standing in the organization, checks the permission its operation
//! declares (`x-required-permission`), parses, calls one service function and responds.

use actix_web::http::header;
use actix_web::{delete, get, patch, post, web, HttpRequest, HttpResponse};
use service::authz::Scope;
use service::domain::{ResourceName, Slug};
use service::paging::PageRequest;
use service::tenancy::{
    read_permission_for, NewScope, OrgAccess, OrgService, ScopeFilter, ScopePatch, ScopeService,
};
use service::{AppContext, ServiceError};
use uuid::Uuid;

use crate::dto::tenancy::{
    AccountResponse, CreateScopeRequest, ListPage, OrganizationResponse, ProjectResponse,
    ScopeListQuery, UpdateOrgRequest, UpdateScopeRequest,
};
use crate::error::{ApiError, Problem};
use crate::precondition::{expected_version, optional_version};
use crate::request_context::{Authenticated, ClientMeta, Requires};
use crate::validation::all_ok;

fn with_etag<T: serde::Serialize>(
    status: actix_web::http::StatusCode,
    version: i32,
    body: T,
) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::ETAG, format!("\"{version}\"")))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body)
}

fn ok<T: serde::Serialize>(version: i32, body: T) -> HttpResponse {
    with_etag(actix_web::http::StatusCode::OK, version, body)
}

fn created<T: serde::Serialize>(version: i32, body: T) -> HttpResponse {
    with_etag(actix_web::http::StatusCode::CREATED, version, body)
}

fn new_scope(body: &CreateScopeRequest) -> Result<NewScope, ApiError> {
    let (name, slug) = all_ok((ResourceName::parse(&body.name), Slug::parse(&body.slug)))?;
    Ok(NewScope { name, slug })
}

fn scope_patch(body: &UpdateScopeRequest) -> Result<ScopePatch, ApiError> {
    let (name, slug) = all_ok((
        body.name.as_deref().map(ResourceName::parse).transpose(),
        body.slug.as_deref().map(Slug::parse).transpose(),
    ))?;
    Ok(ScopePatch {
        name,
        slug,
        require_mfa: None,
    })
}

fn org_patch(body: &UpdateOrgRequest) -> Result<ScopePatch, ApiError> {
    let (name, slug) = all_ok((
        body.name.as_deref().map(ResourceName::parse).transpose(),
        body.slug.as_deref().map(Slug::parse).transpose(),
    ))?;
    Ok(ScopePatch {
        name,
        slug,
        require_mfa: body.require_mfa,
    })
}

fn list_params(q: &ScopeListQuery) -> Result<(ScopeFilter, PageRequest), ApiError> {
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    // No prefix is longer than what it filters, and none holds U+0000 (PostgreSQL cannot even
    // compare one).
    let impossible = |value: &Option<String>, max: usize| {
        value
            .as_ref()
            .is_some_and(|v| v.chars().count() > max || v.contains('\0'))
    };
    if impossible(&q.slug_prefix, service::domain::MAX_SLUG_CHARS) {
        return Err(ServiceError::validation(
            "slug_prefix",
            "invalid_prefix",
            "slug_prefix cannot start any slug",
        )
        .into());
    }
    if impossible(&q.name_prefix, service::domain::MAX_NAME_CHARS) {
        return Err(ServiceError::validation(
            "name_prefix",
            "invalid_prefix",
            "name_prefix cannot start any name",
        )
        .into());
    }
    Ok((
        ScopeFilter {
            slug_prefix: q.slug_prefix.clone(),
            name_prefix: q.name_prefix.clone(),
        },
        page,
    ))
}

/// Create an organization; you become its member with the built-in `owner` role.
#[utoipa::path(
    tag = "organizations",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("authenticated"))),
    responses(
        (status = 201, description = "Created", body = OrganizationResponse),
        (status = 409, description = "Another live organization has this slug (`slug_taken`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/orgs")]
pub async fn create_org(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
    body: web::Json<CreateScopeRequest>,
) -> Result<HttpResponse, ApiError> {
    let new = new_scope(&body)?;
    let org = OrgService::create(&ctx, &meta.0, &auth.0, new).await?;
    Ok(created(org.version, OrganizationResponse::from(org)))
}

/// The organizations you belong to, oldest first.
#[utoipa::path(
    tag = "organizations",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("authenticated"))),
    params(ScopeListQuery),
    responses(
        (status = 200, description = "One page", body = ListPage<OrganizationResponse>),
        (status = 400, description = "Unparseable query (`invalid_query`)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit or cursor (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/orgs")]
pub async fn list_orgs(
    ctx: web::Data<AppContext>,
    auth: Authenticated,
    query: web::Query<ScopeListQuery>,
) -> Result<HttpResponse, ApiError> {
    let (filter, page) = list_params(&query)?;
    let page = OrgService::list_mine(&ctx, &auth.0, &filter, &page).await?;
    Ok(HttpResponse::Ok().json(ListPage::from_page(page, OrganizationResponse::from)))
}

/// One organization (any member may read it).
#[utoipa::path(
    tag = "organizations",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("org:read"))),
    params(("org_id" = Uuid, Path, description = "Organization id")),
    responses(
        (status = 200, description = "The organization; `ETag` carries its version", body = OrganizationResponse),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or you are not a member", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/orgs/{org_id}")]
pub async fn get_org(
    ctx: web::Data<AppContext>,
    auth: Authenticated,
    required: Requires,
    path: web::Path<Uuid>,
) -> Result<HttpResponse, ApiError> {
    let access = OrgAccess::load(&ctx, &auth.0, path.into_inner()).await?;
    access
        .require(&ctx, &access.org_scope(), required.0, required.0)
        .await?;
    let org = OrgService::get(&access).await;
    Ok(ok(org.version, OrganizationResponse::from(org)))
}

/// Rename an organization or change its slug (optimistic locking: `version` or `If-Match`).
#[utoipa::path(
    tag = "organizations",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("org:update"))),
    params(("org_id" = Uuid, Path, description = "Organization id"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|(W/)?"[1-9][0-9]{0,8}")$"#,
        description = "Quoted version from the ETag; `*` for whatever is current")),
    responses(
        (status = 200, description = "Updated", body = OrganizationResponse),
        (status = 400, description = "Malformed id or If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "You may read but not change it (`forbidden`); or `require_mfa: true` from a session not signed in with a second factor (`mfa_required`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or you are not a member", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Slug taken (`slug_taken`)", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Changed since that version (`version_mismatch`)", body = Problem, content_type = "application/problem+json"),
        (status = 428, description = "No version given (`precondition_required`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/orgs/{org_id}")]
pub async fn update_org(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
    required: Requires,
    req: HttpRequest,
    path: web::Path<Uuid>,
    body: web::Json<UpdateOrgRequest>,
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
    let version = expected_version(body.version, req.headers())?;
    let patch = org_patch(&body)?;
    let org = OrgService::update(&ctx, &meta.0, &access, granted, version, patch).await?;
    Ok(ok(org.version, OrganizationResponse::from(org)))
}

/// Delete an organization: it and everything in it disappear at once; its slug is free again.
#[utoipa::path(
    tag = "organizations",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("org:delete"))),
    params(("org_id" = Uuid, Path, description = "Organization id"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|(W/)?"[1-9][0-9]{0,8}")$"#,
        description = "Checked when given")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id or If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "You may read but not delete it", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or you are not a member", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Its policy changed concurrently (`concurrent_change`); retry", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Changed since that version (`version_mismatch`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/orgs/{org_id}")]
pub async fn delete_org(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
    required: Requires,
    req: HttpRequest,
    path: web::Path<Uuid>,
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
    let version = optional_version(req.headers())?;
    OrgService::delete(&ctx, &meta.0, &access, granted, version).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Create an account in the organization.
#[utoipa::path(
    tag = "accounts",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("account:create"))),
    params(("org_id" = Uuid, Path, description = "Organization id")),
    responses(
        (status = 201, description = "Created", body = AccountResponse),
        (status = 403, description = "Not allowed to create accounts here", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or you are not a member", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Slug taken in this organization (`slug_taken`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/orgs/{org_id}/accounts")]
pub async fn create_account(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
    required: Requires,
    path: web::Path<Uuid>,
    body: web::Json<CreateScopeRequest>,
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
    let new = new_scope(&body)?;
    let account = ScopeService::create_account(&ctx, &meta.0, &access, granted, new).await?;
    Ok(created(account.version, AccountResponse::from(account)))
}

/// The organization's accounts you may read, oldest first.
#[utoipa::path(
    tag = "accounts",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("account:read"))),
    params(("org_id" = Uuid, Path, description = "Organization id"), ScopeListQuery),
    responses(
        (status = 200, description = "One page", body = ListPage<AccountResponse>),
        (status = 400, description = "Malformed id or query", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization, or you are not a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/orgs/{org_id}/accounts")]
pub async fn list_accounts(
    ctx: web::Data<AppContext>,
    auth: Authenticated,
    path: web::Path<Uuid>,
    query: web::Query<ScopeListQuery>,
) -> Result<HttpResponse, ApiError> {
    let access = OrgAccess::load(&ctx, &auth.0, path.into_inner()).await?;
    let (filter, page) = list_params(&query)?;
    let page = ScopeService::list_accounts(&ctx, &access, &filter, &page).await?;
    Ok(HttpResponse::Ok().json(ListPage::from_page(page, AccountResponse::from)))
}

/// The account's scope, after checking the caller's standing (404 before anything else).
async fn account_scope(
    ctx: &AppContext,
    auth: &Authenticated,
    org_id: Uuid,
    account_id: Uuid,
) -> Result<(OrgAccess, Scope), ApiError> {
    let access = OrgAccess::load(ctx, &auth.0, org_id).await?;
    let account = access.account(&ctx.db, account_id).await?;
    Ok((access, Scope::account(org_id, account.id)))
}

async fn project_scope(
    ctx: &AppContext,
    auth: &Authenticated,
    (org_id, account_id, project_id): (Uuid, Uuid, Uuid),
) -> Result<(OrgAccess, Scope), ApiError> {
    let access = OrgAccess::load(ctx, &auth.0, org_id).await?;
    let project = access.project(&ctx.db, account_id, project_id).await?;
    Ok((access, Scope::project(org_id, account_id, project.id)))
}

/// One account.
#[utoipa::path(
    tag = "accounts",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("account:read"))),
    params(("org_id" = Uuid, Path, description = "Organization id"), ("account_id" = Uuid, Path, description = "Account id")),
    responses(
        (status = 200, description = "The account; `ETag` carries its version", body = AccountResponse),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account, or not one you may read", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/orgs/{org_id}/accounts/{account_id}")]
pub async fn get_account(
    ctx: web::Data<AppContext>,
    auth: Authenticated,
    required: Requires,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (org_id, account_id) = path.into_inner();
    let (access, scope) = account_scope(&ctx, &auth, org_id, account_id).await?;
    access.require(&ctx, &scope, required.0, required.0).await?;
    let account = access.account(&ctx.db, account_id).await?;
    Ok(ok(account.version, AccountResponse::from(account)))
}

/// Rename an account or change its slug (optimistic locking: `version` or `If-Match`).
#[utoipa::path(
    tag = "accounts",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("account:update"))),
    params(("org_id" = Uuid, Path, description = "Organization id"), ("account_id" = Uuid, Path, description = "Account id"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|(W/)?"[1-9][0-9]{0,8}")$"#,
        description = "Quoted version from the ETag; `*` for whatever is current")),
    responses(
        (status = 200, description = "Updated", body = AccountResponse),
        (status = 400, description = "Malformed id or If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "You may read but not change it", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account, or not one you may read", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Slug taken (`slug_taken`)", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Changed since that version (`version_mismatch`)", body = Problem, content_type = "application/problem+json"),
        (status = 428, description = "No version given (`precondition_required`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/orgs/{org_id}/accounts/{account_id}")]
pub async fn update_account(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
    required: Requires,
    req: HttpRequest,
    path: web::Path<(Uuid, Uuid)>,
    body: web::Json<UpdateScopeRequest>,
) -> Result<HttpResponse, ApiError> {
    let (org_id, account_id) = path.into_inner();
    let (access, scope) = account_scope(&ctx, &auth, org_id, account_id).await?;
    let granted = access
        .require(&ctx, &scope, required.0, read_permission_for(required.0))
        .await?;
    let version = expected_version(body.version, req.headers())?;
    let patch = scope_patch(&body)?;
    let account =
        ScopeService::update_account(&ctx, &meta.0, &access, granted, version, patch).await?;
    Ok(ok(account.version, AccountResponse::from(account)))
}

/// Delete an account: its projects and every grant at or below it stop counting at once.
#[utoipa::path(
    tag = "accounts",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("account:delete"))),
    params(("org_id" = Uuid, Path, description = "Organization id"), ("account_id" = Uuid, Path, description = "Account id"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|(W/)?"[1-9][0-9]{0,8}")$"#,
        description = "Checked when given")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id or If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "You may read but not delete it", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account, or not one you may read", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The organization's policy changed concurrently (`concurrent_change`); retry", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Changed since that version (`version_mismatch`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/orgs/{org_id}/accounts/{account_id}")]
pub async fn delete_account(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
    required: Requires,
    req: HttpRequest,
    path: web::Path<(Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (org_id, account_id) = path.into_inner();
    let (access, scope) = account_scope(&ctx, &auth, org_id, account_id).await?;
    let granted = access
        .require(&ctx, &scope, required.0, read_permission_for(required.0))
        .await?;
    let version = optional_version(req.headers())?;
    ScopeService::delete_account(&ctx, &meta.0, &access, granted, version).await?;
    Ok(HttpResponse::NoContent().finish())
}

/// Create a project in the account.
#[utoipa::path(
    tag = "projects",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("project:create"))),
    params(("org_id" = Uuid, Path, description = "Organization id"), ("account_id" = Uuid, Path, description = "Account id")),
    responses(
        (status = 201, description = "Created", body = ProjectResponse),
        (status = 403, description = "You may read the account but not create projects in it", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account, or not one you may read", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Slug taken in this account (`slug_taken`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/orgs/{org_id}/accounts/{account_id}/projects")]
pub async fn create_project(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
    required: Requires,
    path: web::Path<(Uuid, Uuid)>,
    body: web::Json<CreateScopeRequest>,
) -> Result<HttpResponse, ApiError> {
    let (org_id, account_id) = path.into_inner();
    let (access, scope) = account_scope(&ctx, &auth, org_id, account_id).await?;
    let granted = access
        .require(&ctx, &scope, required.0, read_permission_for(required.0))
        .await?;
    let new = new_scope(&body)?;
    let project = ScopeService::create_project(&ctx, &meta.0, &access, granted, new).await?;
    Ok(created(project.version, ProjectResponse::from(project)))
}

/// The account's projects you may read, oldest first.
#[utoipa::path(
    tag = "projects",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("project:read"))),
    params(("org_id" = Uuid, Path, description = "Organization id"), ("account_id" = Uuid, Path, description = "Account id"), ScopeListQuery),
    responses(
        (status = 200, description = "One page", body = ListPage<ProjectResponse>),
        (status = 400, description = "Malformed id or query", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account, or nothing in it you may read", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad limit or cursor", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/orgs/{org_id}/accounts/{account_id}/projects")]
pub async fn list_projects(
    ctx: web::Data<AppContext>,
    auth: Authenticated,
    path: web::Path<(Uuid, Uuid)>,
    query: web::Query<ScopeListQuery>,
) -> Result<HttpResponse, ApiError> {
    let (org_id, account_id) = path.into_inner();
    let access = OrgAccess::load(&ctx, &auth.0, org_id).await?;
    let (filter, page) = list_params(&query)?;
    let page = ScopeService::list_projects(&ctx, &access, account_id, &filter, &page).await?;
    Ok(HttpResponse::Ok().json(ListPage::from_page(page, ProjectResponse::from)))
}

/// One project.
#[utoipa::path(
    tag = "projects",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("project:read"))),
    params(("org_id" = Uuid, Path, description = "Organization id"), ("account_id" = Uuid, Path, description = "Account id"),
        ("project_id" = Uuid, Path, description = "Project id")),
    responses(
        (status = 200, description = "The project; `ETag` carries its version", body = ProjectResponse),
        (status = 400, description = "Malformed id", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such project, or not one you may read", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/orgs/{org_id}/accounts/{account_id}/projects/{project_id}")]
pub async fn get_project(
    ctx: web::Data<AppContext>,
    auth: Authenticated,
    required: Requires,
    path: web::Path<(Uuid, Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let ids = path.into_inner();
    let (access, scope) = project_scope(&ctx, &auth, ids).await?;
    access.require(&ctx, &scope, required.0, required.0).await?;
    let project = access.project(&ctx.db, ids.1, ids.2).await?;
    Ok(ok(project.version, ProjectResponse::from(project)))
}

/// Rename a project or change its slug (optimistic locking: `version` or `If-Match`).
#[utoipa::path(
    tag = "projects",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("project:update"))),
    params(("org_id" = Uuid, Path, description = "Organization id"), ("account_id" = Uuid, Path, description = "Account id"),
        ("project_id" = Uuid, Path, description = "Project id"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|(W/)?"[1-9][0-9]{0,8}")$"#,
        description = "Quoted version from the ETag; `*` for whatever is current")),
    responses(
        (status = 200, description = "Updated", body = ProjectResponse),
        (status = 400, description = "Malformed id or If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "You may read but not change it", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such project, or not one you may read", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Slug taken (`slug_taken`)", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Changed since that version (`version_mismatch`)", body = Problem, content_type = "application/problem+json"),
        (status = 428, description = "No version given (`precondition_required`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[patch("/orgs/{org_id}/accounts/{account_id}/projects/{project_id}")]
pub async fn update_project(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
    required: Requires,
    req: HttpRequest,
    path: web::Path<(Uuid, Uuid, Uuid)>,
    body: web::Json<UpdateScopeRequest>,
) -> Result<HttpResponse, ApiError> {
    let (access, scope) = project_scope(&ctx, &auth, path.into_inner()).await?;
    let granted = access
        .require(&ctx, &scope, required.0, read_permission_for(required.0))
        .await?;
    let version = expected_version(body.version, req.headers())?;
    let patch = scope_patch(&body)?;
    let project =
        ScopeService::update_project(&ctx, &meta.0, &access, granted, version, patch).await?;
    Ok(ok(project.version, ProjectResponse::from(project)))
}

/// Delete a project; grants on it stop counting at once.
#[utoipa::path(
    tag = "projects",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("project:delete"))),
    params(("org_id" = Uuid, Path, description = "Organization id"), ("account_id" = Uuid, Path, description = "Account id"),
        ("project_id" = Uuid, Path, description = "Project id"),
        ("If-Match" = Option<String>, Header, nullable = false, pattern = r#"^(\*|(W/)?"[1-9][0-9]{0,8}")$"#,
        description = "Checked when given")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 400, description = "Malformed id or If-Match", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "You may read but not delete it", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such project, or not one you may read", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The organization's policy changed concurrently (`concurrent_change`); retry", body = Problem, content_type = "application/problem+json"),
        (status = 412, description = "Changed since that version (`version_mismatch`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[delete("/orgs/{org_id}/accounts/{account_id}/projects/{project_id}")]
pub async fn delete_project(
    ctx: web::Data<AppContext>,
    meta: ClientMeta,
    auth: Authenticated,
    required: Requires,
    req: HttpRequest,
    path: web::Path<(Uuid, Uuid, Uuid)>,
) -> Result<HttpResponse, ApiError> {
    let (access, scope) = project_scope(&ctx, &auth, path.into_inner()).await?;
    let granted = access
        .require(&ctx, &scope, required.0, read_permission_for(required.0))
        .await?;
    let version = optional_version(req.headers())?;
    ScopeService::delete_project(&ctx, &meta.0, &access, granted, version).await?;
    Ok(HttpResponse::NoContent().finish())
}
