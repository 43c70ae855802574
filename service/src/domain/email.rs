//! A syntactically plausible, lower-cased e-mail address.

use crate::error::ServiceError;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Email(String);

impl Email {
    /// Accepts exactly what the API's schema pattern accepts (see `RegisterRequest` in the api
    /// crate): an RFC 5322 dot-atom before the `@` (ASCII letters, digits and
    /// ``!#$%&'*+/=?^_`{|}~-``, dots only between them), then at least two dot-separated DNS labels
    /// (ASCII letters, digits, inner hyphens; punycode for IDNs); at most 64 characters before the
    /// `@` and 254 in all.
    pub fn parse(raw: &str) -> Result<Self, ServiceError> {
        let invalid = |msg: &str| ServiceError::validation("email", "invalid_email", msg);
        if raw.is_empty() {
            return Err(invalid("email is required"));
        }
        if raw.chars().count() > 254 {
            return Err(invalid("email is longer than 254 characters"));
        }
        if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                "email must not contain spaces or control characters",
            ));
        }
        let Some((local, domain)) = raw.split_once('@') else {
            return Err(invalid("email must contain @"));
        };
        let atext = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+/=?^_`{|}~-".contains(c);
        // 64 is RFC 5321's limit, which the schema's `format: email` carries.
        if local.len() > 64
            || !local
                .split('.')
                .all(|atom| !atom.is_empty() && atom.chars().all(atext))
        {
            return Err(invalid("email has an invalid local part"));
        }
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if !domain.contains('.') || !domain.split('.').all(label_ok) {
            return Err(invalid("email has an invalid domain"));
        }
        Ok(Self(raw.to_lowercase()))
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
            Email::parse("Ada@Example.COM").unwrap().as_str(),
            "ada@example.com"
        );
        assert!(Email::parse("a.b+tag@sub.example.org").is_ok());
        assert!(Email::parse("x!#$%&'*+/=?^_{|}~@xn--bcher-kva.example").is_ok());
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
            " a@example.com",
            "a@exämple.com",
            "a@localhost",
            "a@example_x.com",
            "ěþ@example.com",
            "a..b@example.com",
            ".a@example.com",
            "a.@example.com",
            "a(b)@example.com",
            "\"a b\"@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be rejected");
        }
        let long = format!("{}@example.com", "a".repeat(243));
        assert!(Email::parse(&long).is_err());
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(64))).is_ok());
        assert!(Email::parse(&format!("{}@example.com", "a".repeat(65))).is_err());
    }
}
