//! Brute-force protection and rate limits kept in the database, so they hold across instances:
//! per-client counters (`rate_limit_counters`) and per-account password/code budgets
//! (`secret_check_limits`). Times are Unix seconds: the counters are compared and advanced by
//! arithmetic inside one upsert, identically on SQLite and PostgreSQL.

use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(RateLimitCounters::Table)
                    // `<action>:<client>`, e.g. `login:203.0.113.7` or `login:2001:db8:1:2::/64`.
                    .col(string_len(RateLimitCounters::Key, 96).primary_key())
                    .col(big_integer(RateLimitCounters::WindowIndex))
                    .col(integer(RateLimitCounters::PreviousCount))
                    .col(integer(RateLimitCounters::CurrentCount))
                    .to_owned(),
            )
            .await?;
        manager
            .create_table(
                Table::create()
                    .table(SecretCheckLimits::Table)
                    // A user id, or a stand-in id derived from an unknown email: no foreign key,
                    // so that unknown addresses are throttled exactly like known ones.
                    .col(pk_uuid(SecretCheckLimits::Subject))
                    .col(big_integer(SecretCheckLimits::WindowIndex))
                    .col(integer(SecretCheckLimits::PreviousCount))
                    .col(integer(SecretCheckLimits::CurrentCount))
                    .col(integer(SecretCheckLimits::ConsecutiveFailures))
                    .col(integer(SecretCheckLimits::DelaySecs))
                    .col(big_integer(SecretCheckLimits::NotBefore))
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(SecretCheckLimits::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(RateLimitCounters::Table).to_owned())
            .await?;
        Ok(())
    }
}

#[derive(DeriveIden)]
enum RateLimitCounters {
    Table,
    Key,
    WindowIndex,
    PreviousCount,
    CurrentCount,
}

#[derive(DeriveIden)]
enum SecretCheckLimits {
    Table,
    Subject,
    WindowIndex,
    PreviousCount,
    CurrentCount,
    ConsecutiveFailures,
    DelaySecs,
    NotBefore,
}
