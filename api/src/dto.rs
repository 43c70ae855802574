//! Request and response bodies. Separate from the entities so no request can set a column it
//! should not (mass assignment), and each one is a schema in the OpenAPI document.

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use service::auth::IssuedTokens;
use service::sessions::Session;
use service::users::User;
use utoipa::ToSchema;
use uuid::Uuid;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[schema(format = Email, example = "ada@example.com", max_length = 254)]
    pub email: String,
    /// 12 to 128 characters; not a commonly used password.
    #[schema(value_type = String, format = Password, min_length = 12, max_length = 128, example = "correct horse battery staple")]
    pub password: SecretString,
    #[schema(min_length = 1, max_length = 100, example = "Ada Lovelace")]
    pub display_name: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(format = Email, example = "ada@example.com", max_length = 254)]
    pub email: String,
    #[schema(value_type = String, format = Password, max_length = 1024, example = "correct horse battery staple")]
    pub password: SecretString,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    #[schema(value_type = String, max_length = 256)]
    pub refresh_token: SecretString,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeRequest {
    #[schema(min_length = 1, max_length = 100)]
    pub display_name: Option<String>,
    /// Free-form JSON object, at most 8 KiB serialized; replaces the stored object.
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<serde_json::Value>,
    /// The `version` you read; alternatively send it as `If-Match: "<version>"`.
    #[schema(minimum = 1)]
    pub version: Option<i32>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    #[schema(value_type = String, format = Password, max_length = 1024)]
    pub current_password: SecretString,
    #[schema(value_type = String, format = Password, min_length = 12, max_length = 128)]
    pub new_password: SecretString,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum UserStatus {
    Active,
    Disabled,
    Locked,
}

#[derive(Serialize, ToSchema)]
pub struct UserResponse {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    pub status: UserStatus,
    pub email_verified: bool,
    pub mfa_enabled: bool,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// Optimistic-locking version; send it back when updating.
    pub version: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<User> for UserResponse {
    fn from(u: User) -> Self {
        use service::users::UserStatus as S;
        Self {
            id: u.id,
            email: u.email,
            display_name: u.display_name,
            status: match u.status {
                S::Active => UserStatus::Active,
                S::Disabled => UserStatus::Disabled,
                S::Locked => UserStatus::Locked,
            },
            email_verified: u.email_verified_at.is_some(),
            mfa_enabled: u.mfa_enabled,
            metadata: u.metadata,
            version: u.version,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub enum TokenType {
    Bearer,
}

#[derive(Serialize, ToSchema)]
pub struct TokenPair {
    /// EdDSA-signed JWT; verify with `/.well-known/jwks.json`.
    pub access_token: String,
    /// Opaque, single use: each refresh returns a new one. Presenting a used one ends the session.
    pub refresh_token: String,
    pub token_type: TokenType,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    pub session_id: Uuid,
}

impl From<IssuedTokens> for TokenPair {
    fn from(t: IssuedTokens) -> Self {
        Self {
            access_token: t.access_token,
            refresh_token: t.refresh_token.expose_secret().to_owned(),
            token_type: TokenType::Bearer,
            expires_in: t.expires_in,
            session_id: t.session_id,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SessionResponse {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Whether this is the session of the token making the request.
    pub current: bool,
}

impl SessionResponse {
    pub fn from_session(s: Session, current_id: Uuid) -> Self {
        Self {
            current: s.id == current_id,
            id: s.id,
            created_at: s.created_at,
            last_seen_at: s.last_seen_at,
            expires_at: s.expires_at,
            ip: s.ip,
            user_agent: s.user_agent,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct SessionList {
    pub items: Vec<SessionResponse>,
}

#[derive(Serialize, ToSchema)]
pub struct RevokedCount {
    pub revoked: usize,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Jwk {
    #[schema(example = "OKP")]
    pub kty: String,
    #[schema(example = "Ed25519")]
    pub crv: String,
    pub x: String,
    pub kid: String,
    #[schema(example = "EdDSA")]
    pub alg: String,
    #[serde(rename = "use")]
    #[schema(example = "sig")]
    pub use_: String,
}

#[derive(Serialize, Deserialize, ToSchema)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

#[derive(Serialize, ToSchema)]
pub struct Health {
    #[schema(example = "ok")]
    pub status: String,
}
