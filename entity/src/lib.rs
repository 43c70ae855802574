//! SeaORM entities for Tessera, one module per table. No logic lives here.

pub mod prelude;

pub mod accounts;
pub mod audit_events;
pub mod invitations;
pub mod mail_outbox;
pub mod memberships;
pub mod mfa_challenges;
pub mod mfa_factors;
pub mod mfa_recovery_codes;
pub mod one_time_tokens;
pub mod organizations;
pub mod projects;
pub mod rate_limit_counters;
pub mod refresh_tokens;
pub mod role_assignments;
pub mod roles;
pub mod secret_check_limits;
pub mod sessions;
pub mod users;
