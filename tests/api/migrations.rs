//! The real migrations: up, down to zero, and up again, on both databases.

use migration::sea_orm_migration::MigratorTrait;
use migration::Migrator;
use sea_orm::{ConnectionTrait, Statement};

use crate::helpers::{Backend, TestDb};

/// The one value (column `v`) of the query for this database's backend.
async fn scalar<T: sea_orm::TryGetable>(
    db: &sea_orm::DatabaseConnection,
    sqlite: &str,
    postgres: &str,
) -> T {
    let sql = match db.get_database_backend() {
        sea_orm::DatabaseBackend::Sqlite => sqlite,
        _ => postgres,
    };
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("no row from {sql}"));
    row.try_get::<T>("", "v").unwrap()
}

/// Tables after every migration.
const TABLES: i64 = 19;

async fn table_count(db: &sea_orm::DatabaseConnection) -> i64 {
    scalar(
        db,
        "SELECT COUNT(*) AS v FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name <> 'seaql_migrations'",
        "SELECT COUNT(*) AS v FROM information_schema.tables WHERE table_schema = 'public' AND table_name <> 'seaql_migrations'",
    )
    .await
}

/// The stored definition of the audit log's organization index.
async fn audit_org_index(db: &sea_orm::DatabaseConnection) -> String {
    scalar(
        db,
        "SELECT sql AS v FROM sqlite_master WHERE type = 'index' AND name = 'idx_audit_events_organization_id_created_at'",
        "SELECT indexdef AS v FROM pg_indexes WHERE indexname = 'idx_audit_events_organization_id_created_at'",
    )
    .await
}

/// How many migrations `down` must undo to undo `name` (it and every later one).
fn steps_back_to(name: &str) -> u32 {
    let names: Vec<String> = Migrator::migrations()
        .iter()
        .map(|m| m.name().to_owned())
        .collect();
    let position = names
        .iter()
        .position(|n| n == name)
        .unwrap_or_else(|| panic!("no migration {name}"));
    u32::try_from(names.len() - position).unwrap()
}

async fn round_trip(backend: Backend) {
    let Some(test_db) = TestDb::create(backend).await else {
        return;
    };
    let db = service::db::connect(&service::config::DatabaseSettings {
        url: test_db.url().to_owned(),
        ..Default::default()
    })
    .await
    .unwrap();
    let total = Migrator::migrations().len();
    Migrator::up(&db, None).await.unwrap();
    assert!(Migrator::get_pending_migrations(&db)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        table_count(&db).await,
        TABLES,
        "every table of the data model so far"
    );
    // The change feed's triggers go with its table: the rows they watched still change.
    Migrator::down(&db, Some(steps_back_to("m20261206_000010_change_feed")))
        .await
        .unwrap();
    assert!(db
        .execute_unprepared("SELECT count(*) FROM change_feed")
        .await
        .is_err());
    for sql in [
        "INSERT INTO organizations (id, slug, name, version, authz_version, created_at, updated_at) VALUES ('00000000-0000-0000-0000-0000000000aa', 'feed', 'Feed', 1, 1, '2026-01-01', '2026-01-01')",
        "UPDATE organizations SET authz_version = 2, deleted_at = '2026-01-02' WHERE slug = 'feed'",
        "DELETE FROM organizations WHERE slug = 'feed'",
    ] {
        db.execute_unprepared(sql).await.unwrap();
    }
    Migrator::up(&db, None).await.unwrap();
    Migrator::down(&db, Some(total as u32)).await.unwrap();
    assert_eq!(
        table_count(&db).await,
        0,
        "down removes everything up created"
    );
    assert_eq!(
        Migrator::get_pending_migrations(&db).await.unwrap().len(),
        total
    );
    Migrator::up(&db, None).await.unwrap();
    assert_eq!(table_count(&db).await, TABLES);

    // MFA's down drops its three tables and the organizations' require_mfa column; up puts
    // them back.
    Migrator::down(&db, Some(steps_back_to("m20261206_000011_create_mfa")))
        .await
        .unwrap();
    assert_eq!(table_count(&db).await, TABLES - 3);
    assert!(db
        .execute_unprepared("SELECT require_mfa FROM organizations")
        .await
        .is_err());
    Migrator::up(&db, None).await.unwrap();
    assert!(db
        .execute_unprepared("SELECT require_mfa FROM organizations")
        .await
        .is_ok());

    // The one-time tokens' down drops their table; up creates it again.
    Migrator::down(
        &db,
        Some(steps_back_to("m20261206_000009_create_one_time_tokens")),
    )
    .await
    .unwrap();
    assert_eq!(
        table_count(&db).await,
        TABLES - 5,
        "one-time tokens, the change feed and MFA's three tables"
    );
    assert!(db
        .execute_unprepared("SELECT count(*) FROM one_time_tokens")
        .await
        .is_err());
    Migrator::up(&db, None).await.unwrap();
    assert!(db
        .execute_unprepared("SELECT count(*) FROM one_time_tokens")
        .await
        .is_ok());

    // The limits' counters: down drops both tables, up brings them back empty and working.
    Migrator::down(&db, Some(steps_back_to("m20261206_000008_limits")))
        .await
        .unwrap();
    assert_eq!(table_count(&db).await, 12, "the tables before the limits");
    assert!(db
        .execute_unprepared("SELECT count(*) FROM secret_check_limits")
        .await
        .is_err());
    Migrator::up(&db, None).await.unwrap();
    for table in ["rate_limit_counters", "secret_check_limits"] {
        let n: i64 = scalar(
            &db,
            &format!("SELECT count(*) AS v FROM {table}"),
            &format!("SELECT count(*) AS v FROM {table}"),
        )
        .await;
        assert_eq!(n, 0, "{table}");
    }

    // The tenancy reshape's down restores the earlier tables (casbin_rule among them) and its
    // up replaces them again.
    Migrator::down(&db, Some(steps_back_to("m20261206_000007_reshape_tenancy")))
        .await
        .unwrap();
    assert_eq!(
        table_count(&db).await,
        12,
        "old tenancy tables and casbin_rule back, the later tables gone"
    );
    assert!(db
        .execute_unprepared("SELECT count(*) FROM casbin_rule")
        .await
        .is_ok());
    Migrator::up(&db, None).await.unwrap();
    assert!(db
        .execute_unprepared("SELECT count(*) FROM casbin_rule")
        .await
        .is_err());
    let builtin_roles = db
        .query_one_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT count(*) AS n FROM roles WHERE builtin",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get::<i64>("", "n")
        .unwrap();
    assert_eq!(
        builtin_roles, 4,
        "the migration creates the shipped built-in roles"
    );

    // Only organization events go into the organization index; that migration's down restores
    // the whole index, and its up makes it partial again.
    let partial = |def: &str| def.to_lowercase().contains("where");
    assert!(
        partial(&audit_org_index(&db).await),
        "{}",
        audit_org_index(&db).await
    );
    Migrator::down(
        &db,
        Some(steps_back_to("m20261203_000006_partial_audit_org_index")),
    )
    .await
    .unwrap();
    assert!(
        !partial(&audit_org_index(&db).await),
        "{}",
        audit_org_index(&db).await
    );
    Migrator::up(&db, None).await.unwrap();
    assert!(partial(&audit_org_index(&db).await));

    // The audit log is append-only in the database itself.
    let now = chrono::Utc::now();
    use sea_orm::{ActiveModelTrait, EntityTrait, Set};
    let id = uuid::Uuid::now_v7();
    entity::audit_events::ActiveModel {
        id: Set(id),
        organization_id: Set(None),
        actor_user_id: Set(None),
        actor_session_id: Set(None),
        action: Set("test".into()),
        target_type: Set(None),
        target_id: Set(None),
        details: Set(serde_json::json!({})),
        ip: Set(None),
        user_agent: Set(None),
        request_id: Set(None),
        created_at: Set(now),
    }
    .insert(&db)
    .await
    .unwrap();
    assert!(entity::audit_events::Entity::delete_by_id(id)
        .exec(&db)
        .await
        .is_err());
    assert!(db
        .execute_unprepared("UPDATE audit_events SET action = 'changed'")
        .await
        .is_err());
    if db.get_database_backend() == sea_orm::DatabaseBackend::Postgres {
        assert!(db
            .execute_unprepared("TRUNCATE audit_events")
            .await
            .is_err());
    }
    db.close().await.unwrap();
}

#[tokio::test]
async fn migrations_round_trip_on_sqlite() {
    round_trip(Backend::Sqlite).await;
}

#[tokio::test]
async fn migrations_round_trip_on_postgres() {
    round_trip(Backend::Postgres).await;
}
