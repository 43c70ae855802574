//! Bodies of the member and invitation endpoints.

use chrono::{DateTime, Utc};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use service::authz::ScopeType;
use service::tenancy::invitations::{Accepted, Invitation, InvitationStatus};
use service::tenancy::members::{Member, MemberRole};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

/// The level of a scope inside an organization.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MemberScopeType {
    Organization,
    Account,
    Project,
}

impl From<ScopeType> for MemberScopeType {
    fn from(t: ScopeType) -> Self {
        match t {
            ScopeType::Organization => Self::Organization,
            ScopeType::Account => Self::Account,
            ScopeType::Project => Self::Project,
        }
    }
}

impl From<MemberScopeType> for ScopeType {
    fn from(t: MemberScopeType) -> Self {
        match t {
            MemberScopeType::Organization => Self::Organization,
            MemberScopeType::Account => Self::Account,
            MemberScopeType::Project => Self::Project,
        }
    }
}

/// Where a role applies: the organization itself (its id), one of its accounts or projects.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MemberScope {
    #[serde(rename = "type")]
    pub type_: MemberScopeType,
    pub id: Uuid,
}

impl MemberScope {
    fn new(scope_type: ScopeType, id: Uuid) -> Self {
        Self {
            type_: scope_type.into(),
            id,
        }
    }
}

/// One role a member holds at one scope.
#[derive(Serialize, ToSchema)]
pub struct MemberRoleResponse {
    pub assignment_id: Uuid,
    pub role_id: Uuid,
    pub role_name: String,
    pub scope: MemberScope,
}

impl From<MemberRole> for MemberRoleResponse {
    fn from(r: MemberRole) -> Self {
        Self {
            assignment_id: r.assignment_id,
            role_id: r.role_id,
            role_name: r.role_name,
            scope: MemberScope::new(r.scope_type, r.scope_id),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct MemberResponse {
    pub user_id: Uuid,
    pub email: String,
    pub display_name: String,
    pub joined_at: DateTime<Utc>,
    pub roles: Vec<MemberRoleResponse>,
}

impl From<Member> for MemberResponse {
    fn from(m: Member) -> Self {
        Self {
            user_id: m.user_id,
            email: m.email,
            display_name: m.display_name,
            joined_at: m.joined_at,
            roles: m.roles.into_iter().map(Into::into).collect(),
        }
    }
}

/// Paging of the member list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MemberListQuery {
    /// Page size, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[A-Za-z0-9_-]{22}$")]
    pub cursor: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateInvitationRequest {
    /// Who to invite; the link goes to this address only (stored lower-cased).
    #[schema(format = Email, example = "bob@example.com", max_length = 254,
        pattern = r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")]
    pub email: String,
    /// A built-in role or one of this organization's custom roles.
    pub role_id: Uuid,
    /// Where the role applies; the organization when absent.
    pub scope: Option<MemberScope>,
    /// Seconds until the invitation expires: 60 to 2592000 (30 days), default 604800 (7 days).
    #[serde(default, deserialize_with = "crate::dto::integral_version")]
    #[schema(value_type = Option<i64>, minimum = 60, maximum = 2592000)]
    pub expires_in: Option<i64>,
}

/// Where an invitation stands.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
#[schema(as = InvitationStatus)]
pub enum InvitationStatusDto {
    Pending,
    Accepted,
    Revoked,
    Expired,
}

impl From<InvitationStatus> for InvitationStatusDto {
    fn from(s: InvitationStatus) -> Self {
        match s {
            InvitationStatus::Pending => Self::Pending,
            InvitationStatus::Accepted => Self::Accepted,
            InvitationStatus::Revoked => Self::Revoked,
            InvitationStatus::Expired => Self::Expired,
        }
    }
}

impl From<InvitationStatusDto> for InvitationStatus {
    fn from(s: InvitationStatusDto) -> Self {
        match s {
            InvitationStatusDto::Pending => Self::Pending,
            InvitationStatusDto::Accepted => Self::Accepted,
            InvitationStatusDto::Revoked => Self::Revoked,
            InvitationStatusDto::Expired => Self::Expired,
        }
    }
}

/// An invitation. Its token is never shown: it travels only in the mail to the invitee.
#[derive(Serialize, ToSchema)]
pub struct InvitationResponse {
    pub id: Uuid,
    pub organization_id: Uuid,
    pub email: String,
    pub role_id: Uuid,
    pub scope: MemberScope,
    /// The inviter; absent if their account is gone.
    pub invited_by: Option<Uuid>,
    pub expires_at: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
    pub status: InvitationStatusDto,
}

impl From<Invitation> for InvitationResponse {
    fn from(i: Invitation) -> Self {
        let status = InvitationStatus::of(&i, Utc::now()).into();
        let scope_type = ScopeType::parse(&i.scope_type).unwrap_or(ScopeType::Organization);
        Self {
            id: i.id,
            organization_id: i.organization_id,
            email: i.email,
            role_id: i.role_id,
            scope: MemberScope::new(scope_type, i.scope_id),
            invited_by: i.invited_by,
            expires_at: i.expires_at,
            created_at: i.created_at,
            status,
        }
    }
}

/// Paging and filter of the invitation list.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InvitationListQuery {
    /// Page size, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(pattern = r"^[A-Za-z0-9_-]{22}$")]
    pub cursor: Option<String>,
    /// Only invitations in this state.
    #[param(inline)]
    pub status: Option<InvitationStatusDto>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptInvitationRequest {
    /// The token from the invitation's link.
    #[schema(value_type = String, min_length = 1, max_length = 256)]
    pub token: SecretString,
}

/// The caller's membership after accepting.
#[derive(Serialize, ToSchema)]
pub struct AcceptedMembership {
    pub id: Uuid,
    pub user_id: Uuid,
    pub joined_at: DateTime<Utc>,
    /// Whether this acceptance made you a member (false: you already were one).
    pub new_member: bool,
}

#[derive(Serialize, ToSchema)]
pub struct AcceptedInvitationResponse {
    pub organization_id: Uuid,
    pub membership: AcceptedMembership,
    /// The role the invitation granted (an identical existing grant is reused).
    pub assignment: MemberRoleResponse,
}

impl From<Accepted> for AcceptedInvitationResponse {
    fn from(a: Accepted) -> Self {
        Self {
            organization_id: a.organization_id,
            membership: AcceptedMembership {
                id: a.membership.id,
                user_id: a.membership.user_id,
                joined_at: a.membership.created_at,
                new_member: a.joined,
            },
            assignment: a.assignment.into(),
        }
    }
}
