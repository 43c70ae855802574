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

pub mod authz;
pub mod members;
pub mod roles;
pub mod tenancy;

// The schema patterns state exactly what `service::domain` parses, so generated clients and
// fuzzers see the same rules the server applies.
// EMAIL: see `service::domain::Email::parse`.
// DISPLAY_NAME: no control characters, at least one non-space; see `DisplayName::parse`.

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    #[schema(format = Email, example = "ada@example.com", max_length = 254,
        pattern = r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")]
    pub email: String,
    /// 12 to 128 characters; not a commonly used password.
    #[schema(value_type = String, format = Password, min_length = 12, max_length = 128, example = "correct horse battery staple")]
    pub password: SecretString,
    #[schema(
        min_length = 1,
        max_length = 100,
        example = "Ada Lovelace",
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub display_name: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    #[schema(format = Email, example = "ada@example.com", max_length = 254,
        pattern = r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")]
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
    #[schema(
        min_length = 1,
        max_length = 100,
        pattern = r"^[^\u0000-\u001F\u007F-\u009F]*[^\s\u0000-\u001F\u007F-\u009F][^\u0000-\u001F\u007F-\u009F]*$"
    )]
    pub display_name: Option<String>,
    /// Replaces the stored metadata as a whole.
    #[schema(schema_with = metadata_schema_nullable)]
    pub metadata: Option<serde_json::Value>,
    /// The `version` you read; alternatively send it as `If-Match: "<version>"`. One of the two
    /// is required (428 otherwise). Omitting both fields is a no-op that still checks the version.
    #[serde(default, deserialize_with = "integral_version")]
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 2147483647)]
    pub version: Option<i64>,
}

/// `metadata`: at most 20 string keys (1–40 characters, no control characters) with string values
/// of at most 500 characters (no U+0000), exactly as `service::users::parse_metadata` checks.
fn metadata_object(nullable: bool) -> utoipa::openapi::schema::Object {
    use utoipa::openapi::schema::{ObjectBuilder, SchemaType, Type};
    let string = |max: usize, min: Option<usize>, pattern: &str| {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .max_length(Some(max))
            .min_length(min)
            .pattern(Some(pattern))
            .build()
    };
    let types = if nullable {
        SchemaType::from_iter([Type::Object, Type::Null])
    } else {
        SchemaType::new(Type::Object)
    };
    ObjectBuilder::new()
        .schema_type(types)
        .max_properties(Some(service::users::MAX_METADATA_KEYS))
        .property_names(Some(string(
            service::users::MAX_METADATA_KEY_CHARS,
            Some(1),
            r"^[^\u0000-\u001F\u007F-\u009F]+$",
        )))
        .additional_properties(Some(utoipa::openapi::schema::Schema::Object(string(
            service::users::MAX_METADATA_VALUE_CHARS,
            None,
            r"^[^\u0000]*$",
        ))))
        .description(Some(
            "Your own key/value strings: at most 20 keys of 1–40 characters, values of at most 500 characters",
        ))
        .build()
}

fn metadata_schema() -> utoipa::openapi::schema::Object {
    metadata_object(false)
}

fn metadata_schema_nullable() -> utoipa::openapi::schema::Object {
    metadata_object(true)
}

/// JSON Schema's `integer` includes `2.0`; accept any integral number, refuse fractions (for
/// `version`, `expires_in` and other integers of request bodies).
pub(crate) fn integral_version<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<i64>, D::Error> {
    use serde::de::Error;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    match n.as_f64() {
        Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Ok(Some(f as i64)),
        _ => Err(D::Error::custom(format!("must be an integer, got {n}"))),
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    #[schema(value_type = String, format = Password, max_length = 1024)]
    pub current_password: SecretString,
    #[schema(value_type = String, format = Password, min_length = 12, max_length = 128)]
    pub new_password: SecretString,
}

/// A token from a mailed link (`?token=…`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    #[schema(value_type = String, min_length = 1, max_length = 256)]
    pub token: SecretString,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForgotPasswordRequest {
    #[schema(format = Email, example = "ada@example.com", max_length = 254,
        pattern = r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")]
    pub email: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordRequest {
    /// The token from the mailed link.
    #[schema(value_type = String, min_length = 1, max_length = 256)]
    pub token: SecretString,
    /// 12 to 128 characters; not a commonly used password.
    #[schema(value_type = String, format = Password, min_length = 12, max_length = 128)]
    pub new_password: SecretString,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangeEmailRequest {
    /// The new address; it becomes yours once you open the link mailed to it.
    #[schema(format = Email, example = "ada@example.com", max_length = 254,
        pattern = r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")]
    pub email: String,
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
    #[schema(schema_with = metadata_schema)]
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

/// The answer to a sign-in of an account with a second factor: no session yet.
#[derive(Serialize, ToSchema)]
pub struct MfaChallengeResponse {
    /// Always `true`: send the challenge and a code to `POST /v1/auth/mfa/verify`.
    pub mfa_required: bool,
    /// Opaque; works until a code is accepted with it or it expires.
    pub challenge: String,
    /// Seconds the challenge lives.
    pub expires_in: i64,
}

/// A sign-in's answer: the tokens of a new session, or a second-factor challenge.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum LoginResponse {
    Tokens(TokenPair),
    MfaRequired(MfaChallengeResponse),
}

impl From<service::auth::LoginOutcome> for LoginResponse {
    fn from(outcome: service::auth::LoginOutcome) -> Self {
        match outcome {
            service::auth::LoginOutcome::Tokens(tokens) => Self::Tokens(tokens.into()),
            service::auth::LoginOutcome::MfaRequired(c) => {
                Self::MfaRequired(MfaChallengeResponse {
                    mfa_required: true,
                    challenge: c.challenge.expose_secret().to_owned(),
                    expires_in: c.expires_in,
                })
            }
        }
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaVerifyRequest {
    /// The `challenge` of the sign-in's answer.
    #[schema(value_type = String, min_length = 1, max_length = 256)]
    pub challenge: SecretString,
    /// The 6 digits from the authenticator app, or a recovery code (`xxxxx-xxxxx`).
    #[schema(value_type = String, example = "123456", pattern = r"^(?:[0-9]{3} ?[0-9]{3}|[a-km-np-zA-KM-NP-Z2-9]{5}-?[a-km-np-zA-KM-NP-Z2-9]{5})$")]
    pub code: SecretString,
}

/// A code from the authenticator app or a recovery code (to turn MFA off).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MfaCodeRequest {
    /// The 6 digits from the authenticator app, or a recovery code (`xxxxx-xxxxx`).
    #[schema(value_type = String, example = "123456", pattern = r"^(?:[0-9]{3} ?[0-9]{3}|[a-km-np-zA-KM-NP-Z2-9]{5}-?[a-km-np-zA-KM-NP-Z2-9]{5})$")]
    pub code: SecretString,
}

/// A code from the authenticator app (to confirm an enrollment).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TotpCodeRequest {
    /// The 6 digits the authenticator app shows.
    #[schema(value_type = String, example = "123456", pattern = r"^[0-9]{3} ?[0-9]{3}$")]
    pub code: SecretString,
}

/// A TOTP enrollment, shown once: add it to an authenticator app, then confirm with a code.
#[derive(Serialize, ToSchema)]
pub struct TotpEnrollmentResponse {
    /// The shared secret, base32 (RFC 6238: SHA-1, 6 digits, 30 s).
    pub secret: String,
    /// `otpauth://totp/...` for a QR code.
    pub otpauth_uri: String,
}

/// Single-use recovery codes, shown once; each replaces a code from the app one time.
#[derive(Serialize, ToSchema)]
pub struct RecoveryCodesResponse {
    pub recovery_codes: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SessionResponse {
    pub id: Uuid,
    pub created_at: DateTime<Utc>,
    /// Last sign-in or refresh, to the minute (a refresh within a minute of the last recorded one
    /// updates it only if the IP or user agent changed).
    pub last_seen_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// Address of the last recorded sign of life.
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
