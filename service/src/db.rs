//! Opening the database (SQLite or PostgreSQL) with the pool limits from the settings, and migrating it.

use std::time::Duration;

use migration::sea_orm_migration::MigratorTrait;
use migration::Migrator;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
pub use sea_orm::DbErr;
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection};

use crate::config::DatabaseSettings;

pub async fn connect(settings: &DatabaseSettings) -> Result<DatabaseConnection, DbErr> {
    let mut opts = ConnectOptions::new(settings.url.clone());
    let sqlite = settings.is_sqlite();
    let default_max = if sqlite { 1 } else { 16 };
    opts.max_connections(settings.max_connections.unwrap_or(default_max))
        .min_connections(settings.min_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .idle_timeout(Duration::from_secs(300))
        .sqlx_logging(false);
    if sqlite {
        opts.map_sqlx_sqlite_opts(|o| {
            o.journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(Duration::from_secs(5))
                .foreign_keys(true)
        });
    }
    Database::connect(opts).await
}

pub async fn migrate_up(db: &DatabaseConnection) -> Result<(), DbErr> {
    Migrator::up(db, None).await
}

/// Ready = the database answers and no migration is pending.
pub async fn readiness(db: &DatabaseConnection) -> Result<(), ReadinessError> {
    db.execute_unprepared("SELECT 1")
        .await
        .map_err(ReadinessError::Database)?;
    let pending = Migrator::get_pending_migrations(db)
        .await
        .map_err(ReadinessError::Database)?;
    if pending.is_empty() {
        Ok(())
    } else {
        Err(ReadinessError::PendingMigrations(pending.len()))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadinessError {
    #[error("database unreachable")]
    Database(#[source] DbErr),
    #[error("{0} migrations pending")]
    PendingMigrations(usize),
}
