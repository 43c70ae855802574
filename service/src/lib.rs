//! Tessera's domain: identity, sessions, tokens, tenancy, authorization, audit, mail and
//! configuration. Never imports actix.

pub mod audit;
pub mod auth;
pub mod authz;
pub mod changes;
pub mod clock;
pub mod config;
pub mod context;
pub mod db;
pub mod domain;
pub mod error;
pub mod limits;
pub mod mail;
pub mod mfa;
pub mod one_time_tokens;
pub mod paging;
pub mod passwords;
pub mod principal;
pub mod sessions;
pub mod tenancy;
pub mod tokens;
pub mod users;

pub use context::{AppContext, RequestMeta};
pub use error::{ServiceError, ServiceResult};
pub use principal::Principal;
