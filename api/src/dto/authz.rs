//! Bodies of the authorization API (`/v1/authz/*`).

use serde::{Deserialize, Serialize};
use service::authz::questions::{Explanation, Grant, Held, Question, ScopeRef as Place};
use service::authz::Permission;
use service::ServiceError;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::roles::{permission_schema, ScopeRef, ScopeTypeDto};

/// One question: may the user (you, when `user_id` is absent) use `permission` at the scope?
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckRequest {
    pub org_id: Uuid,
    /// Whom the question is about; asking about someone else needs `authz:check` at the scope.
    pub user_id: Option<Uuid>,
    /// The organization itself, one of its accounts, or one of its projects.
    pub scope: ScopeRef,
    #[schema(schema_with = permission_schema)]
    pub permission: String,
}

impl CheckRequest {
    /// The question, once its permission is one of the vocabulary (422 `unknown_permission`).
    pub fn question(&self) -> Result<Question, ServiceError> {
        let permission = self.permission.parse::<Permission>().map_err(|_| {
            ServiceError::validation(
                "permission",
                "unknown_permission",
                format!(
                    "unknown permission; known: {}",
                    Permission::ALL.map(Permission::as_str).join(", ")
                ),
            )
        })?;
        Ok(Question {
            organization_id: self.org_id,
            user_id: self.user_id,
            scope_type: self.scope.type_.into(),
            scope_id: self.scope.id,
            permission,
        })
    }
}

/// Up to 100 questions, answered in order.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckBatchRequest {
    #[schema(min_items = 1, max_items = 100)]
    pub checks: Vec<CheckRequest>,
}

/// One question, or a batch of them.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub enum CheckBody {
    Batch(CheckBatchRequest),
    One(CheckRequest),
}

#[derive(Serialize, ToSchema)]
pub struct CheckResponse {
    pub allowed: bool,
}

#[derive(Serialize, ToSchema)]
pub struct CheckBatchResponse {
    /// One answer per question, in the order asked.
    pub results: Vec<CheckResponse>,
}

/// The answer to a single question or to a batch.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum CheckAnswer {
    Batch(CheckBatchResponse),
    One(CheckResponse),
}

fn place(p: Place) -> ScopeRef {
    ScopeRef {
        type_: p.scope_type.into(),
        id: p.id,
    }
}

#[derive(Serialize, ToSchema)]
pub struct RoleRef {
    pub id: Uuid,
    pub name: String,
    pub builtin: bool,
}

/// A role granted to the user, and where.
#[derive(Serialize, ToSchema)]
pub struct GrantResponse {
    pub assignment_id: Uuid,
    pub membership_id: Uuid,
    pub role: RoleRef,
    /// Where the role is granted: this scope or one above it.
    pub granted_at: ScopeRef,
}

impl From<Grant> for GrantResponse {
    fn from(g: Grant) -> Self {
        Self {
            assignment_id: g.assignment_id,
            membership_id: g.membership_id,
            role: RoleRef {
                id: g.role_id,
                name: g.role_name,
                builtin: g.builtin,
            },
            granted_at: place(g.granted_at),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct HeldPermission {
    #[schema(schema_with = permission_schema)]
    pub permission: &'static str,
    /// The grants on the scope's path whose role carries it.
    pub sources: Vec<GrantResponse>,
}

impl From<Held> for HeldPermission {
    fn from(h: Held) -> Self {
        Self {
            permission: h.permission.as_str(),
            sources: h.sources.into_iter().map(GrantResponse::from).collect(),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct PermissionsResponse {
    pub user_id: Uuid,
    pub scope: ScopeRef,
    /// Every permission held there, inherited ones included, in vocabulary order.
    pub permissions: Vec<HeldPermission>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PermissionsQuery {
    pub org_id: Uuid,
    #[param(inline)]
    pub scope_type: ScopeTypeDto,
    pub scope_id: Uuid,
    /// Whom to ask about (you when absent); someone else needs `authz:check` at the scope.
    pub user_id: Option<Uuid>,
}

#[derive(Deserialize)]
pub struct SubjectsQuery {
    pub org_id: Uuid,
    pub scope_type: ScopeTypeDto,
    pub scope_id: Uuid,
    pub permission: String,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

/// [`SubjectsQuery`]'s parameters but `permission`, whose schema (the vocabulary) utoipa's
/// derive cannot mark required; see the manual [`IntoParams`] below.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
struct SubjectsQueryDoc {
    org_id: Uuid,
    #[param(inline)]
    scope_type: ScopeTypeDto,
    scope_id: Uuid,
    /// Page size, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[A-Za-z0-9_-]{22}$")]
    cursor: Option<String>,
}

impl IntoParams for SubjectsQuery {
    fn into_params(
        parameter_in_provider: impl Fn() -> Option<utoipa::openapi::path::ParameterIn>,
    ) -> Vec<utoipa::openapi::path::Parameter> {
        use utoipa::openapi::path::{ParameterBuilder, ParameterIn};
        use utoipa::openapi::Required;
        let mut params = SubjectsQueryDoc::into_params(parameter_in_provider);
        params.insert(
            3,
            ParameterBuilder::new()
                .name("permission")
                .parameter_in(ParameterIn::Query)
                .required(Required::True)
                .schema(Some(permission_schema()))
                .build(),
        );
        params
    }
}

#[derive(Serialize, ToSchema)]
pub struct SubjectResponse {
    pub user_id: Uuid,
}

#[derive(Serialize, ToSchema)]
pub struct ExplainResponse {
    pub allowed: bool,
    /// The policy line Casbin matched (for an allow), as it would be written in a policy file:
    /// `p, <role>, <organization or *>, <permission>`.
    pub matched_policy: Option<String>,
    /// For an allow: user → membership → role → the scope where it is granted.
    pub chain: Vec<GrantResponse>,
    /// organization → account → project, down to the scope asked about.
    pub scope_path: Vec<ScopeRef>,
    /// For a deny, nearest first: `not_a_member`, `object_deleted`, `role_lacks_permission`,
    /// `grant_at_sibling_scope`, `no_grant`.
    pub reasons: Vec<&'static str>,
}

impl From<Explanation> for ExplainResponse {
    fn from(e: Explanation) -> Self {
        Self {
            allowed: e.allowed,
            matched_policy: e
                .matched_policy
                .map(|fields| format!("p, {}", fields.join(", "))),
            chain: e.chain.into_iter().map(GrantResponse::from).collect(),
            scope_path: e.scope_path.into_iter().map(place).collect(),
            reasons: e.reasons,
        }
    }
}
