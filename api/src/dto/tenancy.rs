//! Bodies of the organization, account and project endpoints.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use service::paging::Page;
use service::tenancy::{Account, Organization, Project};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::integral_version;

// SLUG: what `service::domain::Slug::parse` accepts (it lower-cases first).
// NAME: no control characters, at least one non-space; see `ResourceName::parse`.

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateScopeRequest {
    #[schema(
        min_length = 1,
        max_length = 200,
        example = "Acme Inc.",
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: String,
    /// Lowercase letters, digits and single hyphens; unique among the live siblings
    /// (case-insensitively: it is stored lower-cased).
    #[schema(
        min_length = 1,
        max_length = 63,
        example = "acme",
        pattern = r"^[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*$"
    )]
    pub slug: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateScopeRequest {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = r"^[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*$"
    )]
    pub slug: Option<String>,
    /// The `version` you read; alternatively `If-Match: "<version>"`. One of them is required.
    #[serde(default, deserialize_with = "integral_version")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 2147483647)]
    pub version: Option<i64>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrgRequest {
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub name: Option<String>,
    #[schema(
        min_length = 1,
        max_length = 63,
        pattern = r"^[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*$"
    )]
    pub slug: Option<String>,
    /// Members must sign in with a second factor to do anything in the organization (403
    /// `mfa_required` otherwise). Turning it on needs a session signed in with one.
    pub require_mfa: Option<bool>,
    /// The `version` you read; alternatively `If-Match: "<version>"`. One of them is required.
    #[serde(default, deserialize_with = "integral_version")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 2147483647)]
    pub version: Option<i64>,
}

/// Paging and filters of the organization, account and project lists.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ScopeListQuery {
    /// Page size, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[A-Za-z0-9_-]{22}$")]
    pub cursor: Option<String>,
    /// Only those whose slug starts with this (case-insensitive).
    #[param(max_length = 63, pattern = r"^[^\u0000]*$")]
    pub slug_prefix: Option<String>,
    /// Only those whose name starts with this (case-insensitive).
    #[param(max_length = 200, pattern = r"^[^\u0000]*$")]
    pub name_prefix: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct OrganizationResponse {
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    /// Members must have signed in with a second factor to act in it.
    pub require_mfa: bool,
    /// Optimistic-locking version; send it back when updating.
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Organization> for OrganizationResponse {
    fn from(o: Organization) -> Self {
        Self {
            id: o.id,
            slug: o.slug,
            name: o.name,
            require_mfa: o.require_mfa,
            version: o.version,
            created_at: o.created_at,
            updated_at: o.updated_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct AccountResponse {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub slug: String,
    pub name: String,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Account> for AccountResponse {
    fn from(a: Account) -> Self {
        Self {
            id: a.id,
            organization_id: a.organization_id,
            slug: a.slug,
            name: a.name,
            version: a.version,
            created_at: a.created_at,
            updated_at: a.updated_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ProjectResponse {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub account_id: Uuid,
    pub slug: String,
    pub name: String,
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<Project> for ProjectResponse {
    fn from(p: Project) -> Self {
        Self {
            id: p.id,
            organization_id: p.organization_id,
            account_id: p.account_id,
            slug: p.slug,
            name: p.name,
            version: p.version,
            created_at: p.created_at,
            updated_at: p.updated_at,
        }
    }
}

/// A page of a list: `next_cursor` is absent on the last page.
#[derive(Serialize, ToSchema)]
pub struct ListPage<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> ListPage<T> {
    pub fn from_page<S>(page: Page<S>, f: impl FnMut(S) -> T) -> Self {
        let page = page.map(f);
        Self {
            items: page.items,
            next_cursor: page.next_cursor,
        }
    }
}
