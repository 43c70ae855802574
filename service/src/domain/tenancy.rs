//! Names for tenancy objects: slugs, resource names, role names.

use crate::error::ServiceError;

pub const MAX_SLUG_CHARS: usize = 63;
pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_ROLE_NAME_CHARS: usize = 64;
pub const MAX_DESCRIPTION_CHARS: usize = 500;

/// A URL-safe identifier, unique among its live siblings: lowercase ASCII letters, digits and
/// single hyphens, 1..=63 characters, starting and ending with a letter or digit. Input is
/// lower-cased, so uniqueness is case-insensitive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slug(String);

impl Slug {
    pub fn parse(raw: &str) -> Result<Self, ServiceError> {
        let slug = raw.to_ascii_lowercase();
        let invalid = || {
            ServiceError::validation(
                "slug",
                "invalid_slug",
                format!(
                    "slug must be 1 to {MAX_SLUG_CHARS} lowercase letters, digits or single hyphens, starting and ending with a letter or digit"
                ),
            )
        };
        let ok = !slug.is_empty()
            && slug.len() <= MAX_SLUG_CHARS
            && slug
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !slug.starts_with('-')
            && !slug.ends_with('-')
            && !slug.contains("--");
        if ok {
            Ok(Self(slug))
        } else {
            Err(invalid())
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A display name of an organization, account or project: trimmed, 1..=200 characters, no
/// control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceName(String);

impl ResourceName {
    pub fn parse(raw: &str) -> Result<Self, ServiceError> {
        let trimmed = raw.trim();
        if trimmed.is_empty()
            || raw.chars().count() > MAX_NAME_CHARS
            || raw.chars().any(char::is_control)
        {
            return Err(ServiceError::validation(
                "name",
                "invalid_name",
                format!("name must be 1 to {MAX_NAME_CHARS} characters without control characters"),
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// A role's name: lowercase ASCII letters, digits, `-` and `_`, 1..=64 characters, starting
/// with a letter (so it can never look like a custom role's id in a policy line).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleName(String);

impl RoleName {
    pub fn parse(raw: &str) -> Result<Self, ServiceError> {
        let ok = !raw.is_empty()
            && raw.len() <= MAX_ROLE_NAME_CHARS
            && raw.as_bytes()[0].is_ascii_lowercase()
            && raw
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if ok {
            Ok(Self(raw.to_owned()))
        } else {
            Err(ServiceError::validation(
                "name",
                "invalid_role_name",
                format!("a role name is 1 to {MAX_ROLE_NAME_CHARS} lowercase letters, digits, `-` or `_`, starting with a letter"),
            ))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

/// An optional free-text description, at most 500 characters.
pub fn parse_description(raw: Option<&str>) -> Result<Option<String>, ServiceError> {
    match raw.map(str::trim) {
        None | Some("") => Ok(None),
        Some(d) if d.chars().count() > MAX_DESCRIPTION_CHARS => Err(ServiceError::validation(
            "description",
            "invalid_description",
            format!("description must be at most {MAX_DESCRIPTION_CHARS} characters"),
        )),
        Some(d) if d.contains('\0') => Err(ServiceError::validation(
            "description",
            "invalid_description",
            "description must not contain U+0000",
        )),
        Some(d) => Ok(Some(d.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_lowercased_and_shaped() {
        assert_eq!(Slug::parse("Acme-2").unwrap().as_str(), "acme-2");
        for bad in ["", "-a", "a-", "a--b", "a b", "ä", "a_b", &"a".repeat(64)] {
            assert!(Slug::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Slug::parse(&"a".repeat(63)).is_ok());
    }

    #[test]
    fn role_names() {
        assert!(RoleName::parse("billing_admin-2").is_ok());
        for bad in ["", "Admin", "1abc", "a b", &"a".repeat(65)] {
            assert!(RoleName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(ResourceName::parse(" Acme ").unwrap().into_inner(), "Acme");
        assert!(ResourceName::parse("  ").is_err());
        assert!(ResourceName::parse("a\nb").is_err());
        assert!(ResourceName::parse(&"x".repeat(201)).is_err());
    }
}
