//! The service layer's one error type; the api crate maps it to HTTP in one place.

use sea_orm::{DbErr, RuntimeErr, SqlErr};

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
    /// Forbidden for a reason the client can act on, named by a stable code.
    #[error("forbidden: {0}")]
    Denied(&'static str),
    /// A mailed token (verification, reset) that is unknown, used, expired or no longer valid;
    /// one answer for all of these (401, like a spent refresh token), named by a stable code.
    #[error("invalid token: {0}")]
    InvalidToken(&'static str),
    #[error("not found")]
    NotFound,
    #[error("conflict: {0}")]
    Conflict(&'static str),
    #[error("version mismatch")]
    VersionMismatch,
    #[error("precondition required")]
    PreconditionRequired,
    /// Too many attempts (per client or per account); retry after this many seconds.
    #[error("rate limited")]
    RateLimited { retry_after_secs: u64 },
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

/// Whether the failure is the database being out of reach or momentarily unable to serve (pool
/// timeout, connection refused or dropped, shutdown, deadlock or serialization failure, SQLite
/// busy), as opposed to a bad query: the former is a 503 the client may retry.
pub fn is_unavailable(err: &DbErr) -> bool {
    use sea_orm::sqlx::Error as Sqlx;
    let sqlx_err = match err {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => return true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => e,
        _ => return false,
    };
    match sqlx_err.as_ref() {
        Sqlx::Io(_)
        | Sqlx::PoolTimedOut
        | Sqlx::PoolClosed
        | Sqlx::WorkerCrashed
        | Sqlx::Tls(_) => true,
        Sqlx::Database(db) => {
            let postgres = db
                .try_downcast_ref::<sea_orm::sqlx::postgres::PgDatabaseError>()
                .is_some();
            db.code().is_some_and(|code| {
                if postgres {
                    retryable_sqlstate(&code)
                } else {
                    retryable_sqlite_code(&code)
                }
            })
        }
        _ => false,
    }
}

/// PostgreSQL SQLSTATEs: connection exceptions, shutdowns, too many connections, statement
/// timeout, serialization failure, deadlock.
fn retryable_sqlstate(code: &str) -> bool {
    code.starts_with("08")
        || code.starts_with("57P")
        || matches!(code, "53300" | "57014" | "40001" | "40P01")
}

/// SQLite's BUSY/LOCKED families. SQLite reports (extended) result codes as numbers, the
/// primary code in the low byte; only SQLite's codes are read this way (a PostgreSQL SQLSTATE
/// such as 22021 is all digits too, and its low byte says nothing).
fn retryable_sqlite_code(code: &str) -> bool {
    code.parse::<u32>().is_ok_and(|n| matches!(n & 0xff, 5 | 6))
}

/// Unique-key violations are conflicts the caller can act on.
pub fn is_unique_violation(err: &DbErr) -> bool {
    matches!(err.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_codes() {
        for code in [
            "08006", "08001", "57P01", "57P03", "53300", "57014", "40001", "40P01",
        ] {
            assert!(retryable_sqlstate(code), "{code}");
        }
        // 22021 (invalid byte sequence) has the low byte of SQLite's BUSY: not retryable.
        for code in ["23505", "22P05", "42P01", "22021", "5", "517"] {
            assert!(!retryable_sqlstate(code), "{code}");
        }
        for code in ["5", "517", "6", "262"] {
            assert!(retryable_sqlite_code(code), "{code}");
        }
        for code in ["19", "2067", "1"] {
            assert!(!retryable_sqlite_code(code), "{code}");
        }
    }
}
