//! `/v1/authz/*`: the questions SaaS backends ask on their own hot paths. Asking about yourself
//! needs membership only; asking about another user needs `authz:check` at the scope asked
//! about (the operations' `x-required-permission`), which the service checks per question.

use actix_web::{get, post, web, HttpResponse};
use service::authz::questions::AuthzService;
use service::authz::Permission;
use service::paging::PageRequest;
use service::{AppContext, ServiceError};

use crate::dto::authz::{
    CheckAnswer, CheckBatchResponse, CheckBody, CheckRequest, CheckResponse, ExplainResponse,
    HeldPermission, PermissionsQuery, PermissionsResponse, SubjectResponse, SubjectsQuery,
};
use crate::dto::roles::ScopeRef;
use crate::dto::tenancy::ListPage;
use crate::error::{ApiError, Problem};
use crate::request_context::Authenticated;

/// May this user use this permission here? One question, or up to 100 in `checks` (answered in
/// order in `results`). A role granted at a scope applies below it.
#[utoipa::path(
    tag = "authz",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("authz:check"))),
    request_body = CheckBody,
    responses(
        (status = 200, description = "`{allowed}` for one question, `{results: [{allowed}]}` for a batch", body = CheckAnswer),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Asking about another user without `authz:check` at that scope (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization or scope, or you are not a member (for a batch, the detail names the question)", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown permission (`validation_failed`), or more than 100 questions", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/authz/check")]
pub async fn check(
    ctx: web::Data<AppContext>,
    auth: Authenticated,
    body: web::Json<CheckBody>,
) -> Result<HttpResponse, ApiError> {
    let answer = match body.into_inner() {
        CheckBody::One(q) => {
            let allowed = AuthzService::check(&ctx, &auth.0, &q.question()?).await?;
            CheckAnswer::One(CheckResponse { allowed })
        }
        CheckBody::Batch(batch) => {
            if batch.checks.is_empty() || batch.checks.len() > service::authz::questions::MAX_BATCH
            {
                return Err(ApiError::unprocessable(
                    "validation_failed",
                    "`checks` holds 1 to 100 questions",
                ));
            }
            let questions = batch
                .checks
                .iter()
                .enumerate()
                .map(|(i, q)| q.question().map_err(|e| indexed(i, e)))
                .collect::<Result<Vec<_>, _>>()?;
            let results = AuthzService::check_batch(&ctx, &auth.0, &questions)
                .await
                .map_err(|(i, e)| indexed(i, e))?;
            CheckAnswer::Batch(CheckBatchResponse {
                results: results
                    .into_iter()
                    .map(|allowed| CheckResponse { allowed })
                    .collect(),
            })
        }
    };
    Ok(HttpResponse::Ok().json(answer))
}

/// A batch's error, naming the question it is about.
fn indexed(index: usize, e: ServiceError) -> ApiError {
    let err = ApiError::from(e);
    let code = err.code();
    err.detail(format!("checks[{index}]: {code}"))
}

/// Every permission the user holds at the scope, inherited grants included, each with the
/// grants it comes from.
#[utoipa::path(
    tag = "authz",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("authz:check"))),
    params(PermissionsQuery),
    responses(
        (status = 200, description = "The permissions held there", body = PermissionsResponse),
        (status = 400, description = "Malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Asking about another user without `authz:check` at that scope (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization or scope, or you are not a member", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/authz/permissions")]
pub async fn permissions(
    ctx: web::Data<AppContext>,
    auth: Authenticated,
    query: web::Query<PermissionsQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let held = AuthzService::permissions(
        &ctx,
        &auth.0,
        q.org_id,
        q.scope_type.into(),
        q.scope_id,
        q.user_id,
    )
    .await?;
    Ok(HttpResponse::Ok().json(PermissionsResponse {
        user_id: q.user_id.unwrap_or(auth.0.user_id),
        scope: ScopeRef {
            type_: q.scope_type,
            id: q.scope_id,
        },
        permissions: held.into_iter().map(HeldPermission::from).collect(),
    }))
}

/// The members who may use the permission at the scope, by user id, a page at a time (every
/// member is asked; the list is never cut short without a `next_cursor`).
#[utoipa::path(
    tag = "authz",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("authz:check"))),
    params(SubjectsQuery),
    responses(
        (status = 200, description = "One page", body = ListPage<SubjectResponse>),
        (status = 400, description = "Malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "You do not hold `authz:check` at that scope (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization or scope, or you are not a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown permission, bad limit or cursor (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[get("/authz/subjects")]
pub async fn subjects(
    ctx: web::Data<AppContext>,
    auth: Authenticated,
    query: web::Query<SubjectsQuery>,
) -> Result<HttpResponse, ApiError> {
    let q = query.into_inner();
    let permission = q.permission.parse::<Permission>().map_err(|_| {
        ApiError::from(ServiceError::validation(
            "permission",
            "unknown_permission",
            "unknown permission",
        ))
    })?;
    let page = PageRequest::parse(q.limit, q.cursor.as_deref())?;
    let found = AuthzService::subjects(
        &ctx,
        &auth.0,
        q.org_id,
        q.scope_type.into(),
        q.scope_id,
        permission,
        &page,
    )
    .await?;
    Ok(
        HttpResponse::Ok().json(ListPage::from_page(found, |user_id| SubjectResponse {
            user_id,
        })),
    )
}

/// The decision with what led to it: the policy line matched, the chain user → membership →
/// role → scope, the scope's path, and for a deny the nearest misses as stable codes.
#[utoipa::path(
    tag = "authz",
    security(("bearer" = [])),
    extensions(("x-required-permission" = json!("authz:check"))),
    request_body = CheckRequest,
    responses(
        (status = 200, description = "The decision explained", body = ExplainResponse),
        (status = 400, description = "Malformed body", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Asking about another user without `authz:check` at that scope (`forbidden`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such organization or scope (a deleted one is explained), or you are not a member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown permission (`validation_failed`)", body = Problem, content_type = "application/problem+json"),
    )
)]
#[post("/authz/explain")]
pub async fn explain(
    ctx: web::Data<AppContext>,
    auth: Authenticated,
    body: web::Json<CheckRequest>,
) -> Result<HttpResponse, ApiError> {
    let explanation = AuthzService::explain(&ctx, &auth.0, &body.question()?).await?;
    Ok(HttpResponse::Ok().json(ExplainResponse::from(explanation)))
}
