//! Keyset pagination: `limit` plus an opaque cursor (the last item's id, base64url), so pages
//! stay stable while rows are added and no page costs an OFFSET scan.

use base64::Engine;
use uuid::Uuid;

use crate::error::{ServiceError, ServiceResult};

pub const DEFAULT_LIMIT: u64 = 50;
pub const MAX_LIMIT: u64 = 100;

/// A parsed page request.
#[derive(Debug, Clone, Copy)]
pub struct PageRequest {
    pub limit: u64,
    /// Items after this id (ids are UUIDv7, so this is creation order).
    pub after: Option<Uuid>,
}

impl PageRequest {
    pub fn parse(limit: Option<i64>, cursor: Option<&str>) -> ServiceResult<Self> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(l) if (1..=MAX_LIMIT as i64).contains(&l) => l as u64,
            Some(_) => {
                return Err(ServiceError::validation(
                    "limit",
                    "invalid_limit",
                    format!("limit must be between 1 and {MAX_LIMIT}"),
                ))
            }
        };
        let after = match cursor {
            None => None,
            Some(c) => Some(decode_cursor(c).ok_or_else(|| {
                ServiceError::validation(
                    "cursor",
                    "invalid_cursor",
                    "cursor is not one this API issued",
                )
            })?),
        };
        Ok(Self { limit, after })
    }

    /// How many rows to fetch: one more than the page, to know whether another page follows.
    pub fn fetch(&self) -> u64 {
        self.limit + 1
    }
}

/// One page of results.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Cuts `rows` (fetched with [`PageRequest::fetch`]) to the page and sets the cursor.
    pub fn from_rows(mut rows: Vec<T>, req: &PageRequest, id: impl Fn(&T) -> Uuid) -> Self {
        let more = rows.len() as u64 > req.limit;
        rows.truncate(req.limit as usize);
        let next_cursor = if more {
            rows.last().map(|r| encode_cursor(id(r)))
        } else {
            None
        };
        Self {
            items: rows,
            next_cursor,
        }
    }

    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next_cursor: self.next_cursor,
        }
    }
}

pub fn encode_cursor(id: Uuid) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id.as_bytes())
}

fn decode_cursor(cursor: &str) -> Option<Uuid> {
    use base64::engine::{general_purpose::GeneralPurpose, GeneralPurposeConfig};
    // Any 22 base64url characters are 16 bytes (the last character's spare bits ignored), so
    // every string of the documented cursor shape is one; only other shapes are refused.
    const LENIENT: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new()
            .with_encode_padding(false)
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::RequireNone),
    );
    let bytes = LENIENT.decode(cursor).ok()?;
    Uuid::from_slice(&bytes).ok()
}

/// A `LIKE` pattern matching values that start with `prefix`, its wildcards escaped with `\`.
pub fn like_prefix(prefix: &str) -> String {
    let mut out = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        let id = Uuid::now_v7();
        let page = PageRequest::parse(Some(10), Some(&encode_cursor(id))).unwrap();
        assert_eq!(page.after, Some(id));
        assert!(PageRequest::parse(None, Some("!!")).is_err());
        assert!(PageRequest::parse(None, Some("AAAA")).is_err());
        assert!(PageRequest::parse(None, Some("")).is_err());
        // Any cursor of the documented shape (22 base64url characters) is one.
        assert!(PageRequest::parse(None, Some("0000000000000000000000")).is_ok());
        assert!(PageRequest::parse(Some(0), None).is_err());
        assert!(PageRequest::parse(Some(101), None).is_err());
        assert_eq!(PageRequest::parse(None, None).unwrap().limit, DEFAULT_LIMIT);
    }

    #[test]
    fn like_prefix_escapes_wildcards() {
        assert_eq!(like_prefix("a%b_c\\"), "a\\%b\\_c\\\\%");
    }
}
