//! `ApiError`: the one mapping from service errors (and actix extractor errors) to RFC 9457
//! problem+json responses with a stable `code` and the request id.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use service::error::FieldError;
use service::ServiceError;
use utoipa::ToSchema;

use crate::request_context;

/// An RFC 9457 problem document.
#[derive(Debug, Serialize, ToSchema)]
pub struct Problem {
    /// A URI naming the problem type: `urn:tessera:problem:<code>`.
    #[serde(rename = "type")]
    #[schema(example = "urn:tessera:problem:validation_failed")]
    pub type_: String,
    pub title: String,
    #[schema(example = 422)]
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Stable, machine-readable error code.
    #[schema(example = "validation_failed")]
    pub code: String,
    /// The id of the request, as in the `x-request-id` header and the server log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Per-field problems for validation errors.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldProblem>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FieldProblem {
    pub field: String,
    pub code: String,
    pub message: String,
}

/// Boxed so `Result<T, ApiError>` stays small on every handler's return path.
#[derive(Debug)]
pub struct ApiError(Box<Inner>);

#[derive(Debug)]
struct Inner {
    status: StatusCode,
    code: &'static str,
    title: &'static str,
    detail: Option<String>,
    errors: Vec<FieldProblem>,
    retry_after: Option<u64>,
    request_id: Option<String>,
    source: Option<ServiceError>,
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.0.status.as_u16(), self.0.code)
    }
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, title: &'static str) -> Self {
        Self(Box::new(Inner {
            status,
            code,
            title,
            detail: None,
            errors: Vec::new(),
            retry_after: None,
            request_id: None,
            source: None,
        }))
    }

    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.0.detail = Some(detail.into());
        self
    }

    /// Pins the request id, for errors rendered outside the request's scope.
    pub fn request_id(mut self, id: String) -> Self {
        self.0.request_id = Some(id);
        self
    }

    pub fn code(&self) -> &'static str {
        self.0.code
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, "Bad request").detail(detail)
    }

    pub fn unprocessable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            code,
            "Unprocessable request",
        )
        .detail(detail)
    }

    pub fn not_found() -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", "Not found")
    }

    pub fn unauthenticated(code: &'static str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, "Unauthenticated")
    }
}

fn field_problems(errors: Vec<FieldError>) -> Vec<FieldProblem> {
    errors
        .into_iter()
        .map(|e| FieldProblem {
            field: e.field.to_owned(),
            code: e.code.to_owned(),
            message: e.message,
        })
        .collect()
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        let mut api = match &err {
            ServiceError::Validation(errors) => {
                let mut e = Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "validation_failed",
                    "Validation failed",
                )
                .detail("one or more fields are invalid");
                e.0.errors = field_problems(errors.clone());
                e
            }
            ServiceError::InvalidCredentials => Self::new(
                StatusCode::UNAUTHORIZED,
                "invalid_credentials",
                "Unauthenticated",
            )
            .detail("email or password is incorrect"),
            ServiceError::Unauthenticated(code) => Self::unauthenticated(code),
            ServiceError::WrongCurrentPassword => Self::new(
                StatusCode::FORBIDDEN,
                "invalid_current_password",
                "Forbidden",
            )
            .detail("the current password is not correct"),
            ServiceError::AccountDisabled => {
                Self::new(StatusCode::FORBIDDEN, "account_disabled", "Forbidden")
                    .detail("this account is disabled")
            }
            ServiceError::Forbidden => Self::new(StatusCode::FORBIDDEN, "forbidden", "Forbidden")
                .detail("you may see this, but not do that here"),
            ServiceError::Denied(code) => Self::new(StatusCode::FORBIDDEN, code, "Forbidden"),
            ServiceError::InvalidToken(code) => Self::unauthenticated(code)
                .detail("the link is unknown, already used, expired or no longer valid"),
            ServiceError::NotFound => Self::not_found(),
            ServiceError::Conflict(code) => Self::new(StatusCode::CONFLICT, code, "Conflict"),
            ServiceError::VersionMismatch => Self::new(
                StatusCode::PRECONDITION_FAILED,
                "version_mismatch",
                "Precondition failed",
            )
            .detail("the resource changed since you read it; fetch it again and retry"),
            ServiceError::PreconditionRequired => Self::new(
                StatusCode::PRECONDITION_REQUIRED,
                "precondition_required",
                "Precondition required",
            )
            .detail("send the version you read, as `version` in the body or an If-Match header"),
            ServiceError::RateLimited { retry_after_secs } => {
                let mut e = Self::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "Too many requests",
                )
                .detail("too many attempts; retry after the time in Retry-After");
                e.0.retry_after = Some((*retry_after_secs).max(1));
                e
            }
            ServiceError::Overloaded { retry_after_secs } => {
                let mut e = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "Service unavailable",
                )
                .detail("the server is busy; retry shortly");
                e.0.retry_after = Some(*retry_after_secs);
                e
            }
            ServiceError::Unavailable(_) => {
                let mut e = Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "Service unavailable",
                )
                .detail("the database is unavailable; retry shortly");
                e.0.retry_after = Some(1);
                e
            }
            ServiceError::Unexpected(_) => Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "Internal server error",
            ),
        };
        api.0.source = Some(err);
        api
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.0.status
    }

    fn error_response(&self) -> HttpResponse {
        let this = &self.0;
        let request_id = this
            .request_id
            .clone()
            .or_else(request_context::current_request_id);
        if this.status == StatusCode::SERVICE_UNAVAILABLE {
            // Expected under overload or an outage; one line per refusal would flood the log.
            tracing::debug!(
                code = this.code,
                request_id = request_id.as_deref(),
                "request refused"
            );
        } else if this.status.is_server_error() {
            let chain = this.source.as_ref().map(error_chain).unwrap_or_default();
            tracing::error!(code = this.code, request_id = request_id.as_deref(), error = %chain, "request failed");
        } else {
            tracing::debug!(
                code = this.code,
                status = this.status.as_u16(),
                "request rejected"
            );
        }
        let body = Problem {
            type_: format!("urn:tessera:problem:{}", this.code),
            title: this.title.to_owned(),
            status: this.status.as_u16(),
            detail: this.detail.clone(),
            code: this.code.to_owned(),
            request_id,
            errors: this.errors.clone(),
        };
        let mut res = HttpResponse::build(this.status);
        res.insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        ));
        res.insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")));
        if let Some(secs) = this.retry_after {
            res.insert_header((header::RETRY_AFTER, secs.to_string()));
        }
        if matches!(
            this.code,
            "missing_token" | "invalid_token" | "token_expired" | "session_revoked"
        ) {
            res.insert_header((
                header::WWW_AUTHENTICATE,
                format!(
                    "Bearer error=\"invalid_token\", error_description=\"{}\"",
                    this.code
                ),
            ));
        }
        match serde_json::to_vec(&body) {
            Ok(bytes) => res.body(bytes),
            Err(_) => res.finish(),
        }
    }
}

fn error_chain(err: &ServiceError) -> String {
    let mut out = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
