//! The OpenAPI document: collected from the registered handlers (utoipa-actix-web), plus the
//! bearer scheme and the error responses every operation can give.

use actix_web::App;
use utoipa::openapi::path::Operation;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as OpenApiDoc, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi};
use utoipa_actix_web::AppExt;

use crate::error::{FieldProblem, Problem};
use crate::routes;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera",
        description = "Multi-tenant authentication and RBAC. Errors are RFC 9457 problem documents with a stable `code`.\n\n\
**Tenancy.** An *organization* is a tenant; it holds *accounts*, and accounts hold *projects*. People join an organization as *members* (the creator, or by accepting an invitation) and hold *roles* at a scope: the organization, one account or one project. A role at a scope applies to everything below it, and a member's rights are the union of every role they hold along the chain organization → account → project. Roles are the built-in `owner`, `admin`, `member`, `viewer` (their permission sets come from the server's Casbin policy) or custom roles an organization defines from the closed permission vocabulary (`org:read`, `project:update`, `role:assign`, ...).\n\n\
**Who sees what.** Every operation names the permission it needs in `x-required-permission` (or `authenticated` / `public`). Someone outside an organization gets 404 for anything in it; a member gets 403 for an action they may not take on something they may read, and 404 for what they may not read. Lists only contain what the caller may read, and are paged with `limit` and the opaque `next_cursor`. Deleting an organization or account hides everything below it at once. Changes use optimistic locking: send the `version` you read (or `If-Match`).",
    ),
    components(schemas(Problem, FieldProblem)),
    modifiers(&BearerScheme),
    tags(
        (name = "auth", description = "Sign up, sign in, token refresh, sign out, email verification, password reset"),
        (name = "me", description = "The signed-in user's profile, email address, password and sessions"),
        (name = "organizations", description = "Tenants. Everything below belongs to one organization; outsiders get 404 for anything in it"),
        (name = "accounts", description = "Accounts of an organization"),
        (name = "projects", description = "Projects of an account"),
        (name = "roles", description = "Built-in and custom roles, and role assignments: a role granted at a scope applies to everything below it; nobody grants, defines or edits a role carrying a permission they do not hold there"),
        (name = "members", description = "Who belongs to an organization, with the roles they hold; removing members and leaving"),
        (name = "invitations", description = "Inviting people by email (the link is only ever mailed) and accepting"),
        (name = "authz", description = "Authorization questions for SaaS backends: check (one or a batch), the permissions a user holds and why, who may do something, and why a decision went the way it did. Asking about yourself needs membership; about someone else, `authz:check` at that scope"),
        (name = "ops", description = "Health, readiness and signing keys"),
    )
)]
pub struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut OpenApiDoc) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("Access token from /v1/auth/login or /v1/auth/refresh"))
                    .build(),
            ),
        );
    }
}

/// The whole document, built from the same route table the server runs.
pub fn build() -> OpenApiDoc {
    let (_, mut api) = App::new()
        .into_utoipa_app()
        .openapi(ApiDoc::openapi())
        .configure(routes::configure)
        .split_for_parts();
    add_common_errors(&mut api);
    api
}

fn problem(description: &str) -> RefOr<Response> {
    RefOr::T(
        Response::builder()
            .description(description)
            .content(
                "application/problem+json",
                Content::new(Some(RefOr::Ref(Ref::from_schema_name("Problem")))),
            )
            .build(),
    )
}

/// In an organization that requires a second factor, a member whose session was not signed in
/// with one may do nothing there: every operation on it may answer 403 `mfa_required`.
fn mention_mfa_required(op: &mut Operation) {
    const MFA: &str = "the organization requires a second factor and this session was not signed in with one (`mfa_required`)";
    match op.responses.responses.get_mut("403") {
        Some(RefOr::T(response)) if !response.description.contains(MFA) => {
            response.description = format!("{}; or {MFA}", response.description);
        }
        Some(_) => {}
        None => {
            let description = format!("Forbidden: {MFA}");
            op.responses
                .responses
                .insert("403".to_owned(), problem(&description));
        }
    }
}

/// Adds the errors any operation may answer with, where the handler did not document them.
fn add_common_errors(api: &mut OpenApiDoc) {
    for (path, item) in api.paths.paths.iter_mut() {
        let ops: [&mut Option<Operation>; 5] = [
            &mut item.get,
            &mut item.post,
            &mut item.put,
            &mut item.patch,
            &mut item.delete,
        ];
        for op in ops.into_iter().flatten() {
            let mut extra: Vec<(&str, &str)> = vec![(
                "405",
                "Another method is expected on this path (`method_not_allowed`); see `Allow`",
            )];
            if op.request_body.is_some() {
                extra.push(("400", "Malformed JSON (`malformed_json`) or bad parameter"));
                extra.push((
                    "413",
                    "Body larger than the configured limit (`payload_too_large`)",
                ));
                extra.push((
                    "415",
                    "Body is not application/json (`unsupported_media_type`)",
                ));
                extra.push(("422", "Body of the wrong shape (`invalid_body`) or invalid fields (`validation_failed`)"));
            }
            if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
                extra.push(("401", "Missing or invalid access token"));
            }
            if path != "/healthz" {
                extra.push((
                    "500",
                    "Unexpected error (`internal_error`); the body carries the request id",
                ));
                extra.push((
                    "503",
                    "Database unavailable, server overloaded or request timed out; see Retry-After",
                ));
            }
            for (status, description) in extra {
                op.responses
                    .responses
                    .entry(status.to_owned())
                    .or_insert_with(|| problem(description));
            }
            if path.starts_with("/v1/orgs/{org_id}") || path.starts_with("/v1/authz/") {
                mention_mfa_required(op);
            }
        }
    }
}
