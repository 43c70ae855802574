//! Races that must resolve to exactly one winner.

use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;

use crate::both_backends;
use crate::helpers::{TestApp, PASSWORD};

both_backends!(
    concurrent_registrations_of_one_email,
    concurrent_use_of_one_refresh_token,
    a_refresh_waits_for_a_revocation_in_progress
);

async fn concurrent_registrations_of_one_email(app: TestApp) {
    let body = json!({"email": "race@example.com", "password": PASSWORD, "display_name": "Racer"});
    let results = join_all((0..200).map(|_| app.post_json("/v1/auth/register", &body))).await;
    let mut created = 0;
    let mut conflicts = 0;
    for res in results {
        match res.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => conflicts += 1,
            other => panic!(
                "unexpected {other}: {}",
                res.text().await.unwrap_or_default()
            ),
        }
    }
    assert_eq!((created, conflicts), (1, 199));
}

async fn concurrent_use_of_one_refresh_token(app: TestApp) {
    let user = app.user("racer").await;
    let results = join_all((0..50).map(|_| app.refresh(&user.refresh_token))).await;
    let mut ok = Vec::new();
    for res in results {
        match res.status() {
            StatusCode::OK => ok.push(res.json::<serde_json::Value>().await.unwrap()),
            StatusCode::UNAUTHORIZED => {}
            other => panic!(
                "unexpected {other}: {}",
                res.text().await.unwrap_or_default()
            ),
        }
    }
    assert_eq!(ok.len(), 1, "exactly one refresh may win");
    // The others were reuse: the session ends revoked, and the winner's new token is dead too.
    let session = app.session(user.session_id).await;
    assert!(session.revoked_at.is_some());
    let winner = ok[0]["refresh_token"].as_str().unwrap();
    assert_eq!(app.refresh(winner).await.status(), StatusCode::UNAUTHORIZED);
}

/// With the hashing pool saturated and its queue full, new sign-ins are shed at once with 503 and
/// Retry-After rather than queued for seconds; nothing answers 500.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_shed_with_503_and_retry_after() {
    let app = crate::helpers::TestApp::spawn_with(crate::helpers::Backend::Sqlite, |s| {
        s.password.memory_kib = 8 * 1024;
        s.password.iterations = 3;
        s.password.max_concurrent = Some(1);
        s.password.max_queue = 2;
        s.password.queue_timeout_ms = 200;
    })
    .await
    .unwrap();
    let user = app.user("olga").await;
    let results = join_all((0..30).map(|_| app.login(&user.email, PASSWORD))).await;
    let (mut ok, mut shed) = (0, 0);
    for res in results {
        match res.status() {
            StatusCode::OK => ok += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert_eq!(res.headers()["retry-after"], "1");
                let body: serde_json::Value = res.json().await.unwrap();
                assert_eq!(body["code"], "overloaded");
                shed += 1;
            }
            other => panic!("unexpected {other}"),
        }
    }
    assert!(ok >= 1, "some logins get through");
    assert!(shed >= 1, "the rest are shed");
    assert_eq!(ok + shed, 30);
}

/// A refresh that arrives while its session is being revoked waits for the revocation and is then
/// refused: no refresh answers 200 once a revocation has committed, even one that started first.
/// (PostgreSQL: the live session is read `FOR SHARE`, which the revoking UPDATE's row lock blocks;
/// SQLite: the revoking transaction holds the only writer.)
async fn a_refresh_waits_for_a_revocation_in_progress(app: TestApp) {
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, TransactionTrait};

    let user = app.user("rhea").await;
    let revoking = app.ctx.db.begin().await.unwrap();
    entity::sessions::Entity::update_many()
        .col_expr(
            entity::sessions::Column::RevokedAt,
            Expr::value(chrono::Utc::now()),
        )
        .col_expr(entity::sessions::Column::RevokedReason, Expr::value("test"))
        .filter(entity::sessions::Column::Id.eq(user.session_id))
        .exec(&revoking)
        .await
        .unwrap();

    let refresh = {
        let (client, url, token) = (
            app.client.clone(),
            app.url("/v1/auth/refresh"),
            user.refresh_token.clone(),
        );
        tokio::spawn(async move {
            client
                .post(url)
                .json(&json!({ "refresh_token": token }))
                .send()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        !refresh.is_finished(),
        "the refresh answered while the revocation was still open"
    );
    revoking.commit().await.unwrap();
    let res = refresh.await.unwrap();
    crate::helpers::assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
}
