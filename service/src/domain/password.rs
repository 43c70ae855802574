//! A new password: 12..=128 characters, not in the shipped list of common passwords.
//! No composition rules and no truncation (NIST SP 800-63B).

use std::collections::HashSet;
use std::sync::LazyLock;

use secrecy::{ExposeSecret, SecretString};

use crate::error::ServiceError;

pub const MIN_PASSWORD_CHARS: usize = 12;
pub const MAX_PASSWORD_CHARS: usize = 128;

static COMMON: LazyLock<HashSet<&'static str>> = LazyLock::new(|| {
    include_str!("../../data/common-passwords.txt")
        .lines()
        .collect()
});

/// A password that satisfies the policy. Only constructed by [`Password::parse`].
pub struct Password(SecretString);

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password([REDACTED])")
    }
}

impl Password {
    /// `field` names the request field in the error (`password` or `new_password`).
    pub fn parse(raw: &SecretString, field: &'static str) -> Result<Self, ServiceError> {
        let value = raw.expose_secret();
        let chars = value.chars().count();
        if chars < MIN_PASSWORD_CHARS {
            return Err(ServiceError::validation(
                field,
                "password_too_short",
                format!("password must be at least {MIN_PASSWORD_CHARS} characters"),
            ));
        }
        if chars > MAX_PASSWORD_CHARS {
            return Err(ServiceError::validation(
                field,
                "password_too_long",
                format!("password must be at most {MAX_PASSWORD_CHARS} characters"),
            ));
        }
        if is_common(value) {
            return Err(ServiceError::validation(
                field,
                "password_too_common",
                "password is in a list of commonly used passwords",
            ));
        }
        Ok(Self(raw.clone()))
    }

    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }
}

/// Case-insensitive membership in the shipped list.
pub fn is_common(candidate: &str) -> bool {
    COMMON.contains(candidate.to_lowercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn list_is_a_few_thousand_entries() {
        assert!(COMMON.len() > 5_000, "{}", COMMON.len());
    }

    #[test]
    fn length_is_counted_in_characters() {
        assert!(Password::parse(&p("correct horse"), "password").is_ok());
        assert!(Password::parse(&p("short one"), "password").is_err());
        // 12 multi-byte characters are enough; 129 are too many.
        assert!(Password::parse(&p(&"ü".repeat(12)), "password").is_ok());
        assert!(Password::parse(&p(&"ü".repeat(128)), "password").is_ok());
        assert!(Password::parse(&p(&"ü".repeat(129)), "password").is_err());
    }

    #[test]
    fn common_passwords_rejected_case_insensitively() {
        for bad in [
            "123qweasdzxc",
            "1QAZ2WSX3EDC",
            "Password1234",
            "qwerty123456",
        ] {
            let err = Password::parse(&p(bad), "password").unwrap_err();
            match err {
                ServiceError::Validation(f) => assert_eq!(f[0].code, "password_too_common"),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn no_composition_rules() {
        assert!(Password::parse(&p("all lowercase words here"), "password").is_ok());
    }
}
