//! Combining several parse results so a client learns about every bad field at once.

use service::error::FieldError;
use service::ServiceError;

/// `Ok` with all values if every result is `Ok`; otherwise one `Validation` error listing every
/// field error (non-validation errors win as they are).
pub trait AllOk {
    type Output;
    fn all_ok(self) -> Result<Self::Output, ServiceError>;
}

fn merge(errors: impl IntoIterator<Item = ServiceError>) -> ServiceError {
    let mut fields: Vec<FieldError> = Vec::new();
    for err in errors {
        match err {
            ServiceError::Validation(mut f) => fields.append(&mut f),
            other => return other,
        }
    }
    ServiceError::Validation(fields)
}

impl<A, B> AllOk for (Result<A, ServiceError>, Result<B, ServiceError>) {
    type Output = (A, B);
    fn all_ok(self) -> Result<(A, B), ServiceError> {
        match self {
            (Ok(a), Ok(b)) => Ok((a, b)),
            (a, b) => Err(merge([a.err(), b.err()].into_iter().flatten())),
        }
    }
}

impl<A, B, C> AllOk
    for (
        Result<A, ServiceError>,
        Result<B, ServiceError>,
        Result<C, ServiceError>,
    )
{
    type Output = (A, B, C);
    fn all_ok(self) -> Result<(A, B, C), ServiceError> {
        match self {
            (Ok(a), Ok(b), Ok(c)) => Ok((a, b, c)),
            (a, b, c) => Err(merge([a.err(), b.err(), c.err()].into_iter().flatten())),
        }
    }
}

pub fn all_ok<T: AllOk>(results: T) -> Result<T::Output, ServiceError> {
    results.all_ok()
}
