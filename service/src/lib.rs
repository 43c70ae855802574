//! Tessera's domain: identity, sessions, tokens, audit and configuration. Never imports actix.

pub mod audit;
pub mod auth;
pub mod config;
pub mod context;
pub mod db;
pub mod domain;
pub mod error;
pub mod passwords;
pub mod principal;
pub mod sessions;
pub mod tokens;
pub mod users;

pub use context::{AppContext, RequestMeta};
pub use error::{ServiceError, ServiceResult};
pub use principal::Principal;
