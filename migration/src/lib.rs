//! Tessera's database migrations, in order. Every migration has `up` and `down`, and runs unchanged on
//! SQLite and PostgreSQL: tables are created with their final constraints (SQLite cannot `ALTER` them).

pub use sea_orm_migration;
use sea_orm_migration::prelude::*;

mod m20261125_000001_create_users;
mod m20261125_000002_create_tenancy;
mod m20261125_000003_create_sessions;
mod m20261125_000004_create_audit_events;
mod m20261125_000005_create_casbin_rule;
mod m20261203_000006_partial_audit_org_index;
mod m20261206_000007_reshape_tenancy;
mod m20261206_000008_limits;
mod m20261206_000009_create_one_time_tokens;
mod m20261206_000011_create_mfa;

pub use m20261206_000007_reshape_tenancy::{builtin_role_id, SHIPPED_BUILTIN_ROLES};

pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261125_000001_create_users::Migration),
            Box::new(m20261125_000002_create_tenancy::Migration),
            Box::new(m20261125_000003_create_sessions::Migration),
            Box::new(m20261125_000004_create_audit_events::Migration),
            Box::new(m20261125_000005_create_casbin_rule::Migration),
            Box::new(m20261203_000006_partial_audit_org_index::Migration),
            Box::new(m20261206_000007_reshape_tenancy::Migration),
            Box::new(m20261206_000008_limits::Migration),
            Box::new(m20261206_000009_create_one_time_tokens::Migration),
            Box::new(m20261206_000011_create_mfa::Migration),
        ]
    }
}
