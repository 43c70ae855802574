//! The change feed: one row per committed change that other instances must act on (an
//! organization's `authz_version` or deletion moved, a user's status changed, a session was
//! revoked), written by triggers so that no code path (an API call, `tessera admin
//! disable-user` in another process, a future one) can change those rows without a feed entry.
//! Instances read it in `id` order; on PostgreSQL the triggers also `NOTIFY tessera_changes` so
//! they read it at once, not at their next poll.

use sea_orm_migration::prelude::*;

#[derive(DeriveMigrationName)]
pub struct Migration;

const PG_UP: &[&str] = &[
    r#"CREATE TABLE change_feed (
    id BIGSERIAL PRIMARY KEY,
    organization_id UUID NULL,
    authz_version BIGINT NULL,
    user_id UUID NULL,
    session_id UUID NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
)"#,
    r#"CREATE OR REPLACE FUNCTION change_feed_organizations() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO change_feed (organization_id, authz_version) VALUES (NEW.id, NEW.authz_version);
    PERFORM pg_notify('tessera_changes', '');
    RETURN NULL;
END;
$$"#,
    r#"CREATE TRIGGER change_feed_organizations
AFTER UPDATE ON organizations FOR EACH ROW
WHEN (NEW.authz_version IS DISTINCT FROM OLD.authz_version OR NEW.deleted_at IS DISTINCT FROM OLD.deleted_at)
EXECUTE FUNCTION change_feed_organizations()"#,
    r#"CREATE OR REPLACE FUNCTION change_feed_users() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO change_feed (user_id) VALUES (NEW.id);
    PERFORM pg_notify('tessera_changes', '');
    RETURN NULL;
END;
$$"#,
    r#"CREATE TRIGGER change_feed_users
AFTER UPDATE ON users FOR EACH ROW
WHEN (NEW.status IS DISTINCT FROM OLD.status OR NEW.deleted_at IS DISTINCT FROM OLD.deleted_at)
EXECUTE FUNCTION change_feed_users()"#,
    r#"CREATE OR REPLACE FUNCTION change_feed_sessions() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO change_feed (user_id, session_id) VALUES (NEW.user_id, NEW.id);
    PERFORM pg_notify('tessera_changes', '');
    RETURN NULL;
END;
$$"#,
    r#"CREATE TRIGGER change_feed_sessions
AFTER UPDATE ON sessions FOR EACH ROW
WHEN (OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL)
EXECUTE FUNCTION change_feed_sessions()"#,
];

const PG_DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS change_feed_sessions ON sessions",
    "DROP TRIGGER IF EXISTS change_feed_users ON users",
    "DROP TRIGGER IF EXISTS change_feed_organizations ON organizations",
    "DROP FUNCTION IF EXISTS change_feed_sessions()",
    "DROP FUNCTION IF EXISTS change_feed_users()",
    "DROP FUNCTION IF EXISTS change_feed_organizations()",
    "DROP TABLE IF EXISTS change_feed",
];

const SQLITE_UP: &[&str] = &[
    r#"CREATE TABLE change_feed (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    organization_id uuid_text NULL,
    authz_version bigint NULL,
    user_id uuid_text NULL,
    session_id uuid_text NULL,
    created_at text NOT NULL DEFAULT (strftime('%Y-%m-%d %H:%M:%f', 'now'))
)"#,
    r#"CREATE TRIGGER change_feed_organizations
AFTER UPDATE ON organizations FOR EACH ROW
WHEN NEW.authz_version IS NOT OLD.authz_version OR NEW.deleted_at IS NOT OLD.deleted_at
BEGIN
    INSERT INTO change_feed (organization_id, authz_version) VALUES (NEW.id, NEW.authz_version);
END"#,
    r#"CREATE TRIGGER change_feed_users
AFTER UPDATE ON users FOR EACH ROW
WHEN NEW.status IS NOT OLD.status OR NEW.deleted_at IS NOT OLD.deleted_at
BEGIN
    INSERT INTO change_feed (user_id) VALUES (NEW.id);
END"#,
    r#"CREATE TRIGGER change_feed_sessions
AFTER UPDATE ON sessions FOR EACH ROW
WHEN OLD.revoked_at IS NULL AND NEW.revoked_at IS NOT NULL
BEGIN
    INSERT INTO change_feed (user_id, session_id) VALUES (NEW.user_id, NEW.id);
END"#,
];

const SQLITE_DOWN: &[&str] = &[
    "DROP TRIGGER IF EXISTS change_feed_sessions",
    "DROP TRIGGER IF EXISTS change_feed_users",
    "DROP TRIGGER IF EXISTS change_feed_organizations",
    "DROP TABLE IF EXISTS change_feed",
];

const SQL: crate::BackendSql = crate::BackendSql {
    what: "change_feed",
    pg_up: PG_UP,
    pg_down: PG_DOWN,
    sqlite_up: SQLITE_UP,
    sqlite_down: SQLITE_DOWN,
};

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        SQL.run(manager, true).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        SQL.run(manager, false).await
    }
}
