//! Opening the database (SQLite or PostgreSQL) with the pool limits from the settings, and migrating it.

use std::time::Duration;

use migration::sea_orm_migration::MigratorTrait;
use migration::Migrator;
use sea_orm::sqlx::sqlite::{SqliteJournalMode, SqliteSynchronous};
pub use sea_orm::DbErr;
use sea_orm::{
    ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DatabaseTransaction,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

use crate::config::DatabaseSettings;

/// Pooled connections idle at least this long are pinged before they are handed out.
const PING_IF_IDLE_FOR: Duration = Duration::from_secs(1);

pub async fn connect(settings: &DatabaseSettings) -> Result<DatabaseConnection, DbErr> {
    let mut opts = ConnectOptions::new(settings.url.clone());
    let sqlite = settings.is_sqlite();
    let default_max = if sqlite { 1 } else { 16 };
    opts.max_connections(settings.max_connections.unwrap_or(default_max))
        .min_connections(settings.min_connections)
        .acquire_timeout(Duration::from_millis(settings.acquire_timeout_ms))
        .connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .idle_timeout(Duration::from_secs(300))
        // A busy connection is not pinged before every use (that was a second round trip per
        // statement); one idle this long is, so a database restart during a quiet spell is noticed
        // before a request meets it. A connection that breaks under load fails its statement
        // (503, nothing written) and is replaced.
        .test_before_acquire_if_idle_for(PING_IF_IDLE_FOR)
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

/// Begins a transaction that will write. On SQLite it is `BEGIN IMMEDIATE`: the write lock is
/// taken up front, waiting on the busy timeout if another process (say `tessera admin`) holds it.
/// A deferred transaction that reads before it writes would instead get SQLITE_BUSY at once when
/// it asks to write (SQLite does not call the busy handler there), and the request a 503 that a
/// short wait would have avoided. PostgreSQL ignores the mode.
pub async fn begin_write(db: &DatabaseConnection) -> Result<DatabaseTransaction, DbErr> {
    db.begin_with_options(TransactionOptions {
        sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
        ..TransactionOptions::default()
    })
    .await
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
