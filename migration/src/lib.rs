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
mod m20261206_000010_change_feed;
mod m20261206_000011_create_mfa;

pub use m20261206_000007_reshape_tenancy::{builtin_role_id, SHIPPED_BUILTIN_ROLES};

pub struct Migrator;

/// Raw SQL a migration runs in order, per backend and direction (triggers, functions: what the
/// schema builder does not write).
pub(crate) struct BackendSql {
    pub what: &'static str,
    pub pg_up: &'static [&'static str],
    pub pg_down: &'static [&'static str],
    pub sqlite_up: &'static [&'static str],
    pub sqlite_down: &'static [&'static str],
}

impl BackendSql {
    /// The statements for the manager's backend, in order.
    pub fn statements(
        &self,
        manager: &SchemaManager,
        up: bool,
    ) -> Result<&'static [&'static str], DbErr> {
        use sea_orm_migration::sea_orm::DbBackend;
        match (manager.get_database_backend(), up) {
            (DbBackend::Postgres, true) => Ok(self.pg_up),
            (DbBackend::Postgres, false) => Ok(self.pg_down),
            (DbBackend::Sqlite, true) => Ok(self.sqlite_up),
            (DbBackend::Sqlite, false) => Ok(self.sqlite_down),
            (other, _) => Err(DbErr::Migration(format!(
                "{}: unsupported database backend {other:?}",
                self.what
            ))),
        }
    }

    /// Runs them.
    pub async fn run(&self, manager: &SchemaManager<'_>, up: bool) -> Result<(), DbErr> {
        let db = manager.get_connection();
        for sql in self.statements(manager, up)? {
            db.execute_unprepared(sql).await?;
        }
        Ok(())
    }
}

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
            Box::new(m20261206_000010_change_feed::Migration),
            Box::new(m20261206_000011_create_mfa::Migration),
        ]
    }
}
