//! A syntactically plausible, lower-cased e-mail address.

use crate::error::ServiceError;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    pub fn parse(raw: &str) -> Result<Self, ServiceError> {
        let invalid = |msg: &str| ServiceError::validation("email", "invalid_email", msg);
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(invalid("email is required"));
        }
        if trimmed.len() > 254 {
            return Err(invalid("email is longer than 254 characters"));
        }
        if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "email must not contain spaces or control characters",
            ));
        }
        let Some((local, domain)) = trimmed.rsplit_once('@') else {
            return Err(invalid("email must contain @"));
        };
        if local.is_empty() || local.len() > 64 || local.contains('@') {
            return Err(invalid("email has an invalid local part"));
        }
        let labels_ok = domain
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-'));
        if !domain.contains('.') || !labels_ok {
            return Err(invalid("email has an invalid domain"));
        }
        Ok(Self(trimmed.to_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_inner(self) -> String {
        self.0
    }
}

impl AsRef<str> for Email {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_and_lowercases() {
        assert_eq!(
            Email::parse(" Ada@Example.COM ").unwrap().as_str(),
            "ada@example.com"
        );
        assert!(Email::parse("a.b+tag@sub.example.org").is_ok());
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "   ",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a b@example.com",
            "a@exa mple.com",
            "a@-x.com",
            "a@x..com",
            "a@@x.com",
            "a@x.\u{0}com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(Email::parse(&long).is_err());
    }
}
