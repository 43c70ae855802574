//! The authenticated caller of a request, as proven by an access token.

use uuid::Uuid;

use crate::context::AppContext;
use crate::error::{ServiceError, ServiceResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Principal {
    pub user_id: Uuid,
    pub session_id: Uuid,
    /// The organization the token is scoped to, once organizations exist.
    pub organization_id: Option<Uuid>,
}

impl Principal {
    /// Verifies a bearer token and checks that this instance has not seen its session revoked.
    pub fn from_bearer(ctx: &AppContext, token: &str) -> ServiceResult<Self> {
        let principal = Self::from_bearer_even_if_revoked(ctx, token)?;
        if ctx.revoked.contains(&principal.session_id) {
            return Err(ServiceError::Unauthenticated("session_revoked"));
        }
        Ok(principal)
    }

    /// Verifies a bearer token without asking whether its session was revoked: only for
    /// signing out, which is done either way.
    pub fn from_bearer_even_if_revoked(ctx: &AppContext, token: &str) -> ServiceResult<Self> {
        let claims = ctx.keys.verify_access(token)?;
        Ok(Self {
            user_id: claims.sub,
            session_id: claims.sid,
            organization_id: claims.org,
        })
    }
}
