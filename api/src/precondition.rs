//! Optimistic locking: the version a client read, from the body's `version` or `If-Match`.

use actix_web::http::header::{self, HeaderMap};
use service::ServiceError;

use crate::error::ApiError;

/// The version a client claims to have read: the body's `version`, else `If-Match`.
/// `Ok(None)` means `If-Match: *`: update whatever is current.
pub fn expected_version(
    body_version: Option<i64>,
    headers: &HeaderMap,
) -> Result<Option<i32>, ApiError> {
    let body_version = body_version
        .map(|v| {
            i32::try_from(v).ok().filter(|v| *v >= 1).ok_or_else(|| {
                ServiceError::validation(
                    "version",
                    "invalid_version",
                    "version must be between 1 and 2147483647",
                )
            })
        })
        .transpose()?;
    let header_version = match headers.get(header::IF_MATCH) {
        None => None,
        Some(value) => {
            let value = value.to_str().unwrap_or_default().trim();
            if value == "*" {
                Some(None)
            } else {
                let parsed = value
                    .strip_prefix("W/")
                    .unwrap_or(value)
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .and_then(|v| v.parse::<i32>().ok())
                    .filter(|v| *v >= 1);
                Some(Some(parsed.ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_if_match",
                        "If-Match must be * or a quoted version such as \"3\"",
                    )
                })?))
            }
        }
    };
    match (body_version, header_version) {
        (Some(b), Some(Some(h))) if b != h => Err(ApiError::bad_request(
            "conflicting_versions",
            "the body's version and If-Match disagree",
        )),
        (Some(v), _) => Ok(Some(v)),
        (None, Some(h)) => Ok(h),
        (None, None) => Err(ServiceError::PreconditionRequired.into()),
    }
}

/// For DELETE: `If-Match` is checked when given and not required. `None`: no precondition.
pub fn optional_version(headers: &HeaderMap) -> Result<Option<i32>, ApiError> {
    if headers.get(header::IF_MATCH).is_none() {
        return Ok(None);
    }
    expected_version(None, headers)
}
