//! The service layer's one error type; the api crate maps it to HTTP in one place.

use sea_orm::{DbErr, SqlErr};

pub type ServiceResult<T> = Result<T, ServiceError>;
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A field that failed validation, reported back to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("invalid credentials")]
    InvalidCredentials,
    #[error("unauthenticated: {0}")]
    Unauthenticated(&'static str),
    #[error("the current password is not correct")]
    WrongCurrentPassword,
    #[error("account disabled")]
    AccountDisabled,
    #[error("forbidden")]
    Forbidden,
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(&'static str),
    #[error("version mismatch")]
    VersionMismatch,
    #[error("precondition required")]
    PreconditionRequired,
    #[error("overloaded")]
    Overloaded { retry_after_secs: u64 },
    #[error("database unavailable")]
    Unavailable(#[source] DbErr),
    #[error("unexpected error")]
    Unexpected(#[source] BoxError),
}

impl ServiceError {
    pub fn validation(field: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self::Validation(vec![FieldError {
            field,
            code,
            message: message.into(),
        }])
    }

    pub fn unexpected(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Unexpected(Box::new(err))
    }

    pub fn unexpected_msg(msg: impl Into<String>) -> Self {
        Self::Unexpected(msg.into().into())
    }
}

impl From<DbErr> for ServiceError {
    fn from(err: DbErr) -> Self {
        if is_unavailable(&err) {
            return ServiceError::Unavailable(err);
        }
        ServiceError::Unexpected(Box::new(err))
    }
}

/// Whether the database itself is out of reach (pool timeout, connection refused or dropped),
/// as opposed to a bad query: the former is a 503 the client may retry.
pub fn is_unavailable(err: &DbErr) -> bool {
    match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(e) | DbErr::Query(e) => {
            let text = e.to_string();
            text.contains("PoolTimedOut")
                || text.contains("pool timed out")
                || text.contains("Connection refused")
                || text.contains("connection closed")
                || text.contains("terminating connection")
                || text.contains("the database system is")
                || text.contains("error communicating with database")
                || text.contains("database is locked")
        }
        _ => false,
    }
}

/// Unique-key violations are conflicts the caller can act on.
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}
