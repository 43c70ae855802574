//! A person's display name: trimmed, 1..=100 characters, no control characters.

use crate::error::ServiceError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

pub const MAX_DISPLAY_NAME_CHARS: usize = 100;

impl DisplayName {
    pub fn parse(raw: &str) -> Result<Self, ServiceError> {
        // Limits apply to the raw value, as the API's schema states them; then it is trimmed.
        let trimmed = raw.trim();
        let invalid =
            |msg: String| ServiceError::validation("display_name", "invalid_display_name", msg);
        if trimmed.is_empty() {
            return Err(invalid("display_name must not be empty".into()));
        }
        if raw.chars().count() > MAX_DISPLAY_NAME_CHARS {
            return Err(invalid(format!(
                "display_name must be at most {MAX_DISPLAY_NAME_CHARS} characters"
            )));
        }
        if raw.chars().any(char::is_control) {
            return Err(invalid(
                "display_name must not contain control characters".into(),
            ));
        }
        Ok(Self(trimmed.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_and_bounds() {
        assert_eq!(
            DisplayName::parse("  Ada Lovelace ").unwrap().as_str(),
            "Ada Lovelace"
        );
        assert!(DisplayName::parse("").is_err());
        assert!(DisplayName::parse("   ").is_err());
        assert!(DisplayName::parse("a\u{0}b").is_err());
        assert!(DisplayName::parse(&"é".repeat(100)).is_ok());
        assert!(DisplayName::parse(&"é".repeat(101)).is_err());
        assert!(
            DisplayName::parse(&format!(" {}", "é".repeat(100))).is_err(),
            "raw length counts"
        );
        assert!(DisplayName::parse("tab\there").is_err());
    }
}
