//! The plans PostgreSQL uses for the hot statements on a populated, analyzed database: every
//! table is reached through an index. A sequential scan here reads every user, session or token
//! on each sign-in or refresh (one crept in once, through a join whose size the planner could
//! not bound), which no functional test notices and the benchmarks only show as a slow decline.
//! The plans are the generic ones the server's prepared statements settle on.

use sea_orm::{ConnectionTrait, DbBackend, Statement, TransactionTrait};
use serde_json::Value;
use service::auth::{REFRESH_POSTGRES_SQL, SIGN_IN_POSTGRES_SQL};

use crate::helpers::{Backend, TestApp};

const POPULATE: [&str; 4] = [
    "INSERT INTO users (id, email, password_hash, display_name, metadata, created_at, updated_at) \
     SELECT gen_random_uuid(), 'bulk-' || g || '@example.com', 'x', 'Bulk', '{}'::jsonb, now(), now() \
     FROM generate_series(1, 5000) g",
    "INSERT INTO sessions (id, user_id, created_at, last_seen_at, expires_at) \
     SELECT gen_random_uuid(), u.id, now(), now(), now() + interval '1 day' \
     FROM users u CROSS JOIN generate_series(1, 4)",
    "INSERT INTO refresh_tokens (id, session_id, token_hash, created_at, expires_at) \
     SELECT gen_random_uuid(), s.id, md5(random()::text) || md5(random()::text), now(), \
            now() + interval '1 day' \
     FROM sessions s CROSS JOIN generate_series(1, 2)",
    "ANALYZE",
];

/// The tables a node reads whole.
fn full_scans(plan: &Value, out: &mut Vec<String>) {
    match plan {
        Value::Object(node) => {
            if node.get("Node Type").and_then(Value::as_str) == Some("Seq Scan") {
                let table = node.get("Relation Name").and_then(Value::as_str);
                out.push(table.unwrap_or("?").to_owned());
            }
            node.values().for_each(|v| full_scans(v, out));
        }
        Value::Array(items) => items.iter().for_each(|v| full_scans(v, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_statements_reach_every_table_by_index_on_postgres() {
    let Some(app) = TestApp::spawn(Backend::Postgres).await else {
        return;
    };
    app.user("planned").await;
    let db = &app.ctx.db;
    for sql in POPULATE {
        db.execute_unprepared(sql).await.unwrap();
    }

    let statements = vec![
        (
            "sign-in".to_owned(),
            format!(
                "PREPARE sign_in(timestamptz, uuid, text, uuid, timestamptz, text, text, uuid, \
                 text, timestamptz, uuid, uuid, uuid, uuid, text, text, text, jsonb, text, text, \
                 text, timestamptz) AS {SIGN_IN_POSTGRES_SQL}"
            ),
            "EXECUTE sign_in(now(), gen_random_uuid(), 'x', gen_random_uuid(), now(), NULL, NULL, \
             gen_random_uuid(), 'h', now(), gen_random_uuid(), NULL, NULL, NULL, 'a', NULL, NULL, \
             '{}', NULL, NULL, NULL, now())"
                .to_owned(),
        ),
        (
            "refresh".to_owned(),
            format!(
                "PREPARE refresh(timestamptz, text, text, text, uuid, text, timestamptz, \
                 timestamptz) AS {REFRESH_POSTGRES_SQL}"
            ),
            "EXECUTE refresh(now(), 'h', NULL, NULL, gen_random_uuid(), 'h2', now(), now())"
                .to_owned(),
        ),
        (
            // What PostgreSQL runs for each new refresh token's foreign key (ri_triggers.c), and
            // for each new session's on `users`.
            "foreign-key check on sessions".to_owned(),
            "PREPARE fk_session(uuid) AS SELECT 1 FROM ONLY sessions x WHERE id = $1 \
             FOR KEY SHARE OF x"
                .to_owned(),
            "EXECUTE fk_session(gen_random_uuid())".to_owned(),
        ),
        (
            "foreign-key check on users".to_owned(),
            "PREPARE fk_user(uuid) AS SELECT 1 FROM ONLY users x WHERE id = $1 FOR KEY SHARE OF x"
                .to_owned(),
            "EXECUTE fk_user(gen_random_uuid())".to_owned(),
        ),
    ];
    // One connection for PREPARE and EXPLAIN; nothing is executed (EXPLAIN without ANALYZE).
    let txn = db.begin().await.unwrap();
    txn.execute_unprepared("SET LOCAL plan_cache_mode = force_generic_plan")
        .await
        .unwrap();
    for (name, prepare, execute) in statements {
        txn.execute_unprepared(&prepare).await.unwrap();
        let row = txn
            .query_one_raw(Statement::from_string(
                DbBackend::Postgres,
                format!("EXPLAIN (FORMAT JSON) {execute}"),
            ))
            .await
            .unwrap()
            .expect("EXPLAIN answers one row");
        let plan: Value = row.try_get("", "QUERY PLAN").unwrap();
        let mut scans = Vec::new();
        full_scans(&plan, &mut scans);
        assert!(
            scans.is_empty(),
            "the {name} statement reads {scans:?} whole: {plan:#}"
        );
    }
    txn.execute_unprepared("DEALLOCATE ALL").await.unwrap();
    txn.rollback().await.unwrap();
}

/// The walk finds a full scan however deep the planner nests it, and nothing else.
#[test]
fn full_scans_are_found_anywhere_in_a_plan() {
    let plan = serde_json::json!([{"Plan": {
        "Node Type": "Nested Loop",
        "Plans": [
            {"Node Type": "Index Scan", "Relation Name": "sessions"},
            {"Node Type": "Hash", "Plans": [{"Node Type": "Seq Scan", "Relation Name": "users"}]},
            {"Node Type": "CTE Scan", "CTE Name": "claimed"}
        ]
    }}]);
    let mut scans = Vec::new();
    full_scans(&plan, &mut scans);
    assert_eq!(scans, ["users"]);
}
