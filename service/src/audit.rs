//! The append-only audit log: every security-relevant change writes one row, inside the same
//! transaction as the change itself.

use chrono::Utc;
use entity::audit_events;
use sea_orm::{ActiveModelTrait, ConnectionTrait, DbErr, Set};
use uuid::Uuid;

use crate::context::RequestMeta;

/// The `audit_events` columns in the order [`AuditEvent::into_values`] gives their values; a macro
/// so that SQL constants can `concat!` it.
macro_rules! audit_columns {
    () => {
        "id, organization_id, actor_user_id, actor_session_id, action, target_type, target_id, \
         details, ip, user_agent, request_id, created_at"
    };
}
pub(crate) use audit_columns;

/// Longest user agent kept in an audit row or a session (longer ones are cut).
pub const MAX_USER_AGENT_CHARS: usize = 512;

/// Security-relevant actions. Routine token refreshes are not audited (one per client every few
/// minutes would drown the rest); their reuse is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuditAction {
    UserRegistered,
    LoginSucceeded,
    LoginFailed,
    RefreshTokenReused,
    Logout,
    ProfileUpdated,
    PasswordChanged,
    PasswordChangeFailed,
    StatusChanged,
    SessionRevoked,
    OtherSessionsRevoked,
    OrgCreated,
    OrgUpdated,
    OrgDeleted,
    AccountCreated,
    AccountUpdated,
    AccountDeleted,
    ProjectCreated,
    ProjectUpdated,
    ProjectDeleted,
    MemberRemoved,
    MemberLeft,
    InvitationCreated,
    InvitationRevoked,
    InvitationAccepted,
    RoleCreated,
    RoleUpdated,
    RoleDeleted,
    RoleAssigned,
    RoleUnassigned,
    PolicyReloaded,
    PolicyReloadRejected,
    EmailVerificationSent,
    EmailVerified,
    EmailChangeRequested,
    EmailChanged,
    PasswordResetRequested,
    PasswordReset,
    MfaEnrollmentStarted,
    MfaEnabled,
    MfaDisabled,
    MfaCodeRejected,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::UserRegistered => "user.registered",
            Self::LoginSucceeded => "auth.login_succeeded",
            Self::LoginFailed => "auth.login_failed",
            Self::RefreshTokenReused => "auth.refresh_token_reused",
            Self::Logout => "auth.logout",
            Self::ProfileUpdated => "user.profile_updated",
            Self::PasswordChanged => "user.password_changed",
            Self::PasswordChangeFailed => "user.password_change_failed",
            Self::StatusChanged => "user.status_changed",
            Self::SessionRevoked => "session.revoked",
            Self::OtherSessionsRevoked => "session.others_revoked",
            Self::OrgCreated => "org.created",
            Self::OrgUpdated => "org.updated",
            Self::OrgDeleted => "org.deleted",
            Self::AccountCreated => "account.created",
            Self::AccountUpdated => "account.updated",
            Self::AccountDeleted => "account.deleted",
            Self::ProjectCreated => "project.created",
            Self::ProjectUpdated => "project.updated",
            Self::ProjectDeleted => "project.deleted",
            Self::MemberRemoved => "member.removed",
            Self::MemberLeft => "member.left",
            Self::InvitationCreated => "invitation.created",
            Self::InvitationRevoked => "invitation.revoked",
            Self::InvitationAccepted => "invitation.accepted",
            Self::RoleCreated => "role.created",
            Self::RoleUpdated => "role.updated",
            Self::RoleDeleted => "role.deleted",
            Self::RoleAssigned => "role.assigned",
            Self::RoleUnassigned => "role.unassigned",
            Self::PolicyReloaded => "policy.reloaded",
            Self::PolicyReloadRejected => "policy.reload_rejected",
            Self::EmailVerificationSent => "user.email_verification_sent",
            Self::EmailVerified => "user.email_verified",
            Self::EmailChangeRequested => "user.email_change_requested",
            Self::EmailChanged => "user.email_changed",
            Self::PasswordResetRequested => "user.password_reset_requested",
            Self::PasswordReset => "user.password_reset",
            Self::MfaEnrollmentStarted => "user.mfa_enrollment_started",
            Self::MfaEnabled => "user.mfa_enabled",
            Self::MfaDisabled => "user.mfa_disabled",
            Self::MfaCodeRejected => "auth.mfa_code_rejected",
        }
    }
}

/// One audit row; build with [`AuditEvent::new`] and the `with_*` helpers.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub action: AuditAction,
    pub actor_user_id: Option<Uuid>,
    pub actor_session_id: Option<Uuid>,
    pub organization_id: Option<Uuid>,
    pub target: Option<(&'static str, String)>,
    pub details: serde_json::Value,
}

impl AuditEvent {
    pub fn new(action: AuditAction) -> Self {
        Self {
            action,
            actor_user_id: None,
            actor_session_id: None,
            organization_id: None,
            target: None,
            details: serde_json::json!({}),
        }
    }

    pub fn actor(mut self, user_id: Uuid, session_id: Option<Uuid>) -> Self {
        self.actor_user_id = Some(user_id);
        self.actor_session_id = session_id;
        self
    }

    pub fn actor_opt(mut self, user_id: Option<Uuid>, session_id: Option<Uuid>) -> Self {
        self.actor_user_id = user_id;
        self.actor_session_id = session_id;
        self
    }

    pub fn organization(mut self, organization_id: Uuid) -> Self {
        self.organization_id = Some(organization_id);
        self
    }

    pub fn target(mut self, kind: &'static str, id: impl ToString) -> Self {
        self.target = Some((kind, id.to_string()));
        self
    }

    pub fn details(mut self, details: serde_json::Value) -> Self {
        self.details = details;
        self
    }

    /// The row this event writes, every column filled (for statements that insert it themselves).
    pub fn into_row(self, meta: &RequestMeta) -> audit_events::Model {
        let (target_type, target_id) = match self.target {
            Some((kind, id)) => (Some(kind.to_owned()), Some(id)),
            None => (None, None),
        };
        audit_events::Model {
            id: Uuid::now_v7(),
            organization_id: self.organization_id,
            actor_user_id: self.actor_user_id,
            actor_session_id: self.actor_session_id,
            action: self.action.as_str().to_owned(),
            target_type,
            target_id,
            details: self.details,
            ip: meta.ip.clone(),
            user_agent: meta
                .user_agent
                .as_ref()
                .map(|ua| ua.chars().take(MAX_USER_AGENT_CHARS).collect()),
            request_id: meta.request_id.clone(),
            created_at: Utc::now(),
        }
    }

    /// This event's column values, in the order of [`audit_columns!`], for statements that insert
    /// the event themselves (e.g. `INSERT INTO audit_events (audit_columns!()) SELECT $n, ...`).
    pub fn into_values(self, meta: &RequestMeta) -> [sea_orm::Value; 12] {
        let row = self.into_row(meta);
        [
            row.id.into(),
            row.organization_id.into(),
            row.actor_user_id.into(),
            row.actor_session_id.into(),
            row.action.into(),
            row.target_type.into(),
            row.target_id.into(),
            row.details.into(),
            row.ip.into(),
            row.user_agent.into(),
            row.request_id.into(),
            row.created_at.into(),
        ]
    }

    pub async fn record(
        self,
        conn: &impl ConnectionTrait,
        meta: &RequestMeta,
    ) -> Result<(), DbErr> {
        let row = self.into_row(meta);
        audit_events::ActiveModel {
            id: Set(row.id),
            organization_id: Set(row.organization_id),
            actor_user_id: Set(row.actor_user_id),
            actor_session_id: Set(row.actor_session_id),
            action: Set(row.action),
            target_type: Set(row.target_type),
            target_id: Set(row.target_id),
            details: Set(row.details),
            ip: Set(row.ip),
            user_agent: Set(row.user_agent),
            request_id: Set(row.request_id),
            created_at: Set(row.created_at),
        }
        .insert(conn)
        .await
        .map(|_| ())
    }
}
