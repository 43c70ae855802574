//! `/v1/me/sessions`: listing and revoking, and isolation between users.

use reqwest::StatusCode;
use serde_json::Value;

use crate::both_backends;
use crate::helpers::{assert_problem, TestApp};

both_backends!(
    list_and_revoke_sessions,
    revoke_all_other_sessions,
    sessions_of_others_are_404,
    revoked_sessions_cannot_write
);

async fn list_and_revoke_sessions(app: TestApp) {
    let user = app.user("sam").await;
    let second = app.sign_in(&user).await;
    let res = app
        .client
        .get(app.url("/v1/me/sessions"))
        .bearer_auth(&user.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let list: Value = res.json().await.unwrap();
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(
        items[0]["id"],
        second.session_id.to_string(),
        "newest first"
    );
    let current: Vec<bool> = items
        .iter()
        .map(|s| s["current"].as_bool().unwrap())
        .collect();
    assert_eq!(current, vec![false, true]);
    assert!(items[0]["user_agent"].is_string() || items[0]["user_agent"].is_null());
    assert_eq!(items[0]["ip"], "127.0.0.1");

    let res = app
        .delete_authed(
            &format!("/v1/me/sessions/{}", second.session_id),
            &user.access_token,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        app.get_authed("/v1/me", &second.access_token)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.refresh(&second.refresh_token).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let list: Value = app
        .get_authed("/v1/me/sessions", &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    // Revoking it again: it is no longer a live session.
    let res = app
        .delete_authed(
            &format!("/v1/me/sessions/{}", second.session_id),
            &user.access_token,
        )
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = app
        .delete_authed("/v1/me/sessions/not-a-uuid", &user.access_token)
        .await;
    assert_problem(res, StatusCode::BAD_REQUEST, "invalid_path_parameter").await;
    let res = app
        .delete_authed(
            &format!("/v1/me/sessions/{}", uuid::Uuid::now_v7()),
            &user.access_token,
        )
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    assert!(app
        .audit_actions(user.id)
        .await
        .contains(&"session.revoked".to_owned()));
}

async fn revoke_all_other_sessions(app: TestApp) {
    let user = app.user("otto").await;
    let a = app.sign_in(&user).await;
    let b = app.sign_in(&user).await;
    let res = app
        .delete_authed("/v1/me/sessions", &user.access_token)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["revoked"], 2);
    for other in [&a, &b] {
        app.assert_signed_out(other).await;
    }
    assert_eq!(
        app.get_authed("/v1/me", &user.access_token).await.status(),
        StatusCode::OK
    );
    let body: Value = app
        .delete_authed("/v1/me/sessions", &user.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["revoked"], 0);
}

async fn sessions_of_others_are_404(app: TestApp) {
    let alice = app.user("alice").await;
    let bob = app.user("bob").await;
    let res = app
        .delete_authed(
            &format!("/v1/me/sessions/{}", bob.session_id),
            &alice.access_token,
        )
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    assert_eq!(
        app.get_authed("/v1/me", &bob.access_token).await.status(),
        StatusCode::OK,
        "bob's session survives"
    );
    let list: Value = app
        .get_authed("/v1/me/sessions", &alice.access_token)
        .await
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![alice.session_id.to_string()]);
}

/// A session revoked in the database (say by another instance, whose local revocation list this
/// instance never saw) can no longer change anything, even while its access token is unexpired.
async fn revoked_sessions_cannot_write(app: TestApp) {
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let user = app.user("rex").await;
    let other = app.sign_in(&user).await;
    entity::sessions::Entity::update_many()
        .col_expr(
            entity::sessions::Column::RevokedAt,
            Expr::value(chrono::Utc::now()),
        )
        .filter(entity::sessions::Column::Id.eq(user.session_id))
        .exec(&app.ctx.db)
        .await
        .unwrap();
    let t = &user.access_token;
    let res = app
        .client
        .patch(app.url("/v1/me"))
        .bearer_auth(t)
        .json(&serde_json::json!({"display_name": "hijacked", "version": 1}))
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::UNAUTHORIZED, "session_revoked").await;
    let res = app.delete_authed("/v1/me/sessions", t).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "session_revoked").await;
    let res = app
        .delete_authed(&format!("/v1/me/sessions/{}", other.session_id), t)
        .await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "session_revoked").await;
    let res = app
        .post_authed(
            "/v1/me/password",
            t,
            &serde_json::json!({"current_password": crate::helpers::PASSWORD, "new_password": "hijacker's new passphrase"}),
        )
        .await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "session_revoked").await;
    // The other session is untouched, and logging out of a dead session is still a success.
    assert_eq!(
        app.get_authed("/v1/me", &other.access_token).await.status(),
        StatusCode::OK
    );
    let res = app
        .post_authed("/v1/auth/logout", t, &serde_json::json!({}))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}
