//! One test binary: the real server over HTTP on SQLite and PostgreSQL, with the real migrations.

mod helpers;

mod auth;
mod authz;
mod authz_differential;
mod concurrency;
mod email_verification;
mod errors;
mod faults;
mod invitations;
mod limits;
mod matrix;
mod me;
mod members;
mod mfa;
mod migrations;
mod openapi;
mod ops;
mod orgs;
mod password_reset;
mod plans;
mod policy_cli;
mod refresh_grace;
mod roles;
mod sessions;
mod smtp;
mod tokens;
