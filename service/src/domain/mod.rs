//! Parse-don't-validate newtypes for everything a request can carry.

mod display_name;
mod email;
mod password;

pub use display_name::DisplayName;
pub use email::Email;
pub use password::{Password, MAX_PASSWORD_CHARS, MIN_PASSWORD_CHARS};
mod tenancy;

pub use tenancy::{
    parse_description, ResourceName, RoleName, Slug, MAX_NAME_CHARS, MAX_SLUG_CHARS,
};
