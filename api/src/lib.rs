//! Tessera's HTTP layer: routes, extractors, middleware and the one mapping of errors to HTTP.

pub mod dto;
pub mod error;
pub mod openapi;
pub mod precondition;
pub mod request_context;
pub mod routes;
pub mod startup;
pub mod telemetry;
pub mod validation;

pub use startup::Application;
