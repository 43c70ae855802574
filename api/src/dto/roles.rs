//! Bodies of the role and role-assignment endpoints.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use service::authz::ScopeType;
use service::tenancy::roles::{sorted_names, AssignmentView, RoleView};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::integral_version;

// ROLE_NAME: what `service::domain::RoleName::parse` accepts.
// PERMISSION: one of the vocabulary's names (`service::authz::Permission`); the schema lists them.

pub(crate) fn permission_schema() -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, Type};
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(
            service::authz::Permission::ALL.map(service::authz::Permission::as_str),
        ))
        .description(Some(
            service::authz::Permission::ALL
                .map(|p| format!("`{}`: {}", p.as_str(), p.description()))
                .join("\n"),
        ))
        .build()
}

fn permissions_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::ArrayBuilder;
    ArrayBuilder::new()
        .items(permission_schema())
        .min_items(Some(1))
        .max_items(Some(service::tenancy::roles::MAX_PERMISSION_ENTRIES))
        .description(Some(
            "Permissions from the closed vocabulary; duplicates collapse, an unknown name is a 422 (`unknown_permission`)",
        ))
        .build()
}

fn permissions_schema_nullable() -> utoipa::openapi::schema::Array {
    let mut array = permissions_schema();
    array.schema_type = utoipa::openapi::schema::SchemaType::from_iter([
        utoipa::openapi::schema::Type::Array,
        utoipa::openapi::schema::Type::Null,
    ]);
    array
}

fn granted_permissions_schema() -> utoipa::openapi::schema::Array {
    use utoipa::openapi::schema::ArrayBuilder;
    ArrayBuilder::new()
        .items(permission_schema())
        .description(Some("The role's permissions, sorted by name"))
        .build()
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRoleRequest {
    /// Unique in the organization and not a built-in role's name (409 `role_name_taken`).
    #[schema(
        min_length = 1,
        max_length = 64,
        example = "deployer",
        pattern = r"^[a-z][a-z0-9_-]{0,63}$"
    )]
    pub name: String,
    /// At most 500 characters; no U+0000 (the databases cannot store it).
    #[schema(
        max_length = 500,
        example = "Ships projects",
        pattern = r"^[^\u0000]*$"
    )]
    pub description: Option<String>,
    /// You must hold every one of them at organization scope (403 `escalation_denied`).
    #[schema(schema_with = permissions_schema)]
    pub permissions: Vec<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateRoleRequest {
    #[schema(min_length = 1, max_length = 64, pattern = r"^[a-z][a-z0-9_-]{0,63}$")]
    pub name: Option<String>,
    /// An empty string clears it; absent or null leaves it alone. No U+0000.
    #[schema(max_length = 500, pattern = r"^[^\u0000]*$")]
    pub description: Option<String>,
    /// Replaces the set. You must hold every permission of the role before and after.
    #[schema(schema_with = permissions_schema_nullable)]
    pub permissions: Option<Vec<String>>,
    /// The `version` you read; alternatively `If-Match: "<version>"`. One of them is required.
    #[serde(default, deserialize_with = "integral_version")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 2147483647)]
    pub version: Option<i64>,
}

#[derive(Serialize, ToSchema)]
pub struct RoleResponse {
    pub id: Uuid,
    pub name: String,
    pub description: Option<String>,
    #[schema(schema_with = granted_permissions_schema)]
    pub permissions: Vec<&'static str>,
    /// Built-in roles come from the policy files and cannot be changed through the API.
    pub builtin: bool,
    /// Null for a built-in role.
    pub organization_id: Option<Uuid>,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<RoleView> for RoleResponse {
    fn from(r: RoleView) -> Self {
        Self {
            id: r.row.id,
            name: r.row.name,
            description: r.row.description,
            permissions: sorted_names(&r.permissions),
            builtin: r.row.builtin,
            organization_id: r.row.organization_id,
            version: r.row.version,
            created_at: r.row.created_at,
            updated_at: r.row.updated_at,
        }
    }
}

/// Paging of the role list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RoleListQuery {
    /// Page size, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[A-Za-z0-9_-]{22}$")]
    pub cursor: Option<String>,
}

/// Where a grant applies: the organization itself, one of its accounts or one of its projects
/// (and everything below it).
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScopeRef {
    #[serde(rename = "type")]
    pub type_: ScopeTypeDto,
    /// The organization's, account's or project's id.
    pub id: Uuid,
}

/// The level of a scope.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = ScopeType)]
pub enum ScopeTypeDto {
    Organization,
    Account,
    Project,
}

impl From<ScopeTypeDto> for ScopeType {
    fn from(t: ScopeTypeDto) -> Self {
        match t {
            ScopeTypeDto::Organization => ScopeType::Organization,
            ScopeTypeDto::Account => ScopeType::Account,
            ScopeTypeDto::Project => ScopeType::Project,
        }
    }
}

impl From<ScopeType> for ScopeTypeDto {
    fn from(t: ScopeType) -> Self {
        match t {
            ScopeType::Organization => ScopeTypeDto::Organization,
            ScopeType::Account => ScopeTypeDto::Account,
            ScopeType::Project => ScopeTypeDto::Project,
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAssignmentRequest {
    /// A member of the organization (422 `not_a_member` otherwise).
    pub user_id: Uuid,
    /// A built-in role or one of this organization's custom roles.
    pub role_id: Uuid,
    pub scope: ScopeRef,
}

#[derive(Serialize, ToSchema)]
pub struct AssignmentResponse {
    pub id: Uuid,
    pub user_id: Uuid,
    pub role_id: Uuid,
    pub role_name: String,
    pub scope: ScopeRef,
    /// Who granted it; null if that user is gone.
    pub granted_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

impl From<AssignmentView> for AssignmentResponse {
    fn from(a: AssignmentView) -> Self {
        let type_ = ScopeType::parse(&a.row.scope_type)
            .unwrap_or(ScopeType::Organization)
            .into();
        Self {
            id: a.row.id,
            user_id: a.user_id,
            role_id: a.row.role_id,
            role_name: a.role_name,
            scope: ScopeRef {
                type_,
                id: a.row.scope_id,
            },
            granted_by: a.row.granted_by,
            created_at: a.row.created_at,
        }
    }
}

/// Paging and filters of the role-assignment list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AssignmentListQuery {
    /// Page size, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[A-Za-z0-9_-]{22}$")]
    pub cursor: Option<String>,
    /// Only this user's grants.
    pub user_id: Option<Uuid>,
    /// Only grants at scopes of this type.
    #[param(inline)]
    pub scope_type: Option<ScopeTypeDto>,
    /// Only grants at exactly this organization, account or project.
    pub scope_id: Option<Uuid>,
    /// Only grants of this role.
    pub role_id: Option<Uuid>,
}
