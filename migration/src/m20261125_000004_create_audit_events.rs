use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

/// PostgreSQL: one function raising an exception, called by a row trigger before UPDATE or DELETE.
const PG_UP: &[&str] = &[
    r#"CREATE OR REPLACE FUNCTION audit_events_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_events is append-only';
END;
$$"#,
    r#"CREATE TRIGGER audit_events_append_only
BEFORE UPDATE OR DELETE ON audit_events
FOR EACH ROW EXECUTE FUNCTION audit_events_append_only()"#,
    r#"CREATE TRIGGER audit_events_no_truncate
BEFORE TRUNCATE ON audit_events
FOR EACH STATEMENT EXECUTE FUNCTION audit_events_append_only()"#,
];

const PG_DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS audit_events_no_truncate ON audit_events",
    "DROP TRIGGER IF EXISTS audit_events_append_only ON audit_events",
    "DROP FUNCTION IF EXISTS audit_events_append_only()",
];

/// SQLite: one trigger per statement kind, each aborting the statement.
const SQLITE_UP: &[&str] = &[
    r#"CREATE TRIGGER audit_events_no_update
BEFORE UPDATE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END"#,
    r#"CREATE TRIGGER audit_events_no_delete
BEFORE DELETE ON audit_events
BEGIN
    SELECT RAISE(ABORT, 'audit_events is append-only');
END"#,
];

const SQLITE_DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS audit_events_no_delete",
    "DROP TRIGGER IF EXISTS audit_events_no_update",
];

const TRIGGERS: crate::BackendSql = crate::BackendSql {
    what: "audit_events append-only trigger",
    pg_up: PG_UP,
    pg_down: PG_DOWN,
    sqlite_up: SQLITE_UP,
    sqlite_down: SQLITE_DOWN,
};

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // Refuse an unsupported backend before creating anything.
        TRIGGERS.statements(manager, true)?;

        manager
            .create_table(
                Table::create()
                    .table(AuditEvents::Table)
                    .col(pk_uuid(AuditEvents::Id))
                    // No foreign keys: the audit trail must survive deletion of what it mentions.
                    .col(uuid_null(AuditEvents::OrganizationId))
                    .col(uuid_null(AuditEvents::ActorUserId))
                    .col(uuid_null(AuditEvents::ActorSessionId))
                    .col(string(AuditEvents::Action))
                    .col(string_null(AuditEvents::TargetType))
                    .col(string_null(AuditEvents::TargetId))
                    .col(json_binary(AuditEvents::Details))
                    .col(string_null(AuditEvents::Ip))
                    .col(string_null(AuditEvents::UserAgent))
                    .col(string_null(AuditEvents::RequestId))
                    .col(timestamp_with_time_zone(AuditEvents::CreatedAt))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_audit_events_organization_id_created_at")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::OrganizationId)
                    .col(AuditEvents::CreatedAt)
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("idx_audit_events_actor_user_id_created_at")
                    .table(AuditEvents::Table)
                    .col(AuditEvents::ActorUserId)
                    .col(AuditEvents::CreatedAt)
                    .to_owned(),
            )
            .await?;

        TRIGGERS.run(manager, true).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        TRIGGERS.run(manager, false).await?;
        manager
            .drop_table(Table::drop().table(AuditEvents::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum AuditEvents {
    Table,
    Id,
    OrganizationId,
    ActorUserId,
    ActorSessionId,
    Action,
    TargetType,
    TargetId,
    Details,
    Ip,
    UserAgent,
    RequestId,
    CreatedAt,
}
