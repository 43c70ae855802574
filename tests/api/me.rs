//! `/v1/me`: profile reads, optimistic-locked updates, password change.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{assert_problem, TestApp, PASSWORD};

both_backends!(
    get_me_requires_a_token,
    patch_me_with_version_or_if_match,
    patch_me_failure_paths,
    patch_me_unconditional_and_empty,
    change_password_revokes_other_sessions,
    change_password_failure_paths,
);

async fn patch(
    app: &TestApp,
    token: &str,
    if_match: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut req = app
        .client
        .patch(app.url("/v1/me"))
        .bearer_auth(token)
        .json(&body);
    if let Some(v) = if_match {
        req = req.header("if-match", v);
    }
    req.send().await.unwrap()
}

async fn get_me_requires_a_token(app: TestApp) {
    let res = app.get("/v1/me").await;
    let body = assert_problem(res, StatusCode::UNAUTHORIZED, "missing_token").await;
    assert!(body["detail"].is_string());
    let user = app.user("ivy").await;
    let res = app.get_authed("/v1/me", &user.access_token).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["etag"], "\"1\"");
    let me: Value = res.json().await.unwrap();
    assert_eq!(me["id"], user.id.to_string());
}

async fn patch_me_with_version_or_if_match(app: TestApp) {
    let user = app.user("pat").await;
    let res = patch(
        &app,
        &user.access_token,
        None,
        json!({"display_name": "Pat B", "version": 1}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["etag"], "\"2\"");
    let me: Value = res.json().await.unwrap();
    assert_eq!(
        (me["display_name"].as_str(), me["version"].as_i64()),
        (Some("Pat B"), Some(2))
    );

    let res = patch(
        &app,
        &user.access_token,
        Some("\"2\""),
        json!({"metadata": {"theme": "dark"}}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let me: Value = res.json().await.unwrap();
    assert_eq!(me["metadata"], json!({"theme": "dark"}));
    assert_eq!(me["display_name"], "Pat B");
    assert_eq!(me["version"], 3);

    // Weak validators are accepted too.
    let res = patch(
        &app,
        &user.access_token,
        Some("W/\"3\""),
        json!({"display_name": "Pat C"}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);

    // A writer holding an old version loses, and nothing changes.
    let res = patch(
        &app,
        &user.access_token,
        None,
        json!({"display_name": "Stale", "version": 2}),
    )
    .await;
    assert_problem(res, StatusCode::PRECONDITION_FAILED, "version_mismatch").await;
    let me: Value = app.me(&user.access_token).await;
    assert_eq!(
        (me["display_name"].as_str(), me["version"].as_i64()),
        (Some("Pat C"), Some(4))
    );
    assert!(app
        .audit_actions(user.id)
        .await
        .contains(&"user.profile_updated".to_owned()));
}

async fn patch_me_failure_paths(app: TestApp) {
    let user = app.user("fay").await;
    let t = &user.access_token;
    let cases: Vec<(Option<&str>, Value, StatusCode, &str)> = vec![
        (
            None,
            json!({"display_name": "X"}),
            StatusCode::PRECONDITION_REQUIRED,
            "precondition_required",
        ),
        (
            Some("\"abc\""),
            json!({"display_name": "X"}),
            StatusCode::BAD_REQUEST,
            "invalid_if_match",
        ),
        (
            Some("\"1\""),
            json!({"display_name": "X", "version": 2}),
            StatusCode::BAD_REQUEST,
            "conflicting_versions",
        ),
        (
            None,
            json!({"display_name": "", "version": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            None,
            json!({"display_name": "x".repeat(101), "version": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            None,
            json!({"metadata": [1, 2], "version": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            None,
            json!({"metadata": {"big": "x".repeat(9000)}, "version": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            None,
            json!({"display_name": "X", "version": "1"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            None,
            json!({"email": "new@example.com", "version": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            None,
            json!({"status": "active", "version": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            None,
            json!({"display_name": "X", "version": 99}),
            StatusCode::PRECONDITION_FAILED,
            "version_mismatch",
        ),
        (
            None,
            json!({"metadata": {"big": "x".repeat(501)}, "version": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            None,
            json!({"metadata": {"n": 1}, "version": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            None,
            json!({"metadata": {"nul": "a\u{0}b"}, "version": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            None,
            json!({"metadata": {"": "empty key"}, "version": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            None,
            json!({"metadata": (0..21).map(|i| (i.to_string(), json!("v"))).collect::<serde_json::Map<_, _>>(), "version": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            None,
            json!({"display_name": "X", "version": 0}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            None,
            json!({"display_name": "X", "version": 1.5}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
        (
            Some("\"0\""),
            json!({"display_name": "X"}),
            StatusCode::BAD_REQUEST,
            "invalid_if_match",
        ),
        (
            None,
            json!({"version": 7}),
            StatusCode::PRECONDITION_FAILED,
            "version_mismatch",
        ),
    ];
    for (if_match, body, status, code) in cases {
        let res = patch(&app, t, if_match, body.clone()).await;
        let got = res.status();
        let problem: Value = res.json().await.unwrap();
        assert_eq!(
            (got, problem["code"].as_str().unwrap()),
            (status, code),
            "{if_match:?} {body}"
        );
    }
    let me: Value = app.me(t).await;
    assert_eq!(
        (me["display_name"].as_str(), me["version"].as_i64()),
        (Some("fay"), Some(1)),
        "nothing was written"
    );
}

async fn change_password_revokes_other_sessions(app: TestApp) {
    let user = app.user("cass").await;
    let other = app.sign_in(&user).await;
    let new_password = "a brand new passphrase";
    let res = app
        .post_authed(
            "/v1/me/password",
            &user.access_token,
            &json!({"current_password": PASSWORD, "new_password": new_password}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    // The current session lives on; the other one is gone (access and refresh).
    assert_eq!(
        app.get_authed("/v1/me", &user.access_token).await.status(),
        StatusCode::OK
    );
    app.assert_signed_out(&other).await;
    assert_eq!(
        app.refresh(&user.refresh_token).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.login(&user.email, PASSWORD).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login(&user.email, new_password).await.status(),
        StatusCode::OK
    );
    assert!(app
        .audit_actions(user.id)
        .await
        .contains(&"user.password_changed".to_owned()));
}

async fn change_password_failure_paths(app: TestApp) {
    let user = app.user("finn").await;
    let t = &user.access_token;
    let cases: Vec<(Value, StatusCode, &str, &str)> = vec![
        (
            json!({"current_password": PASSWORD, "new_password": "too short"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "password_too_short",
        ),
        (
            json!({"current_password": PASSWORD, "new_password": "qwerty123456"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "password_too_common",
        ),
        (
            json!({"current_password": PASSWORD, "new_password": PASSWORD}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            "password_unchanged",
        ),
    ];
    let res = app
        .post_authed(
            "/v1/me/password",
            t,
            &json!({"current_password": "wrong password!", "new_password": "another fine passphrase"}),
        )
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "invalid_current_password").await;
    assert!(app
        .audit_actions(user.id)
        .await
        .contains(&"user.password_change_failed".to_owned()));
    for (body, status, code, field_code) in cases {
        let res = app.post_authed("/v1/me/password", t, &body).await;
        let problem = assert_problem(res, status, code).await;
        assert_eq!(problem["errors"][0]["code"], field_code, "{body}");
    }
    let res = app
        .post_authed("/v1/me/password", t, &json!({"current_password": PASSWORD}))
        .await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
    let res = app
        .post_json(
            "/v1/me/password",
            &json!({"current_password": PASSWORD, "new_password": "x"}),
        )
        .await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "missing_token").await;
    assert_eq!(
        app.login(&user.email, PASSWORD).await.status(),
        StatusCode::OK,
        "the password is unchanged"
    );
}

async fn patch_me_unconditional_and_empty(app: TestApp) {
    let user = app.user("una").await;
    let t = &user.access_token;
    // `If-Match: *` opts out of the version check.
    let res = patch(&app, t, Some("*"), json!({"display_name": "Una B"})).await;
    assert_eq!(res.status(), StatusCode::OK);
    let me: Value = res.json().await.unwrap();
    assert_eq!(
        (me["display_name"].as_str(), me["version"].as_i64()),
        (Some("Una B"), Some(2))
    );
    // Nothing to change: a no-op that still checks the version and bumps nothing.
    let res = patch(&app, t, None, json!({"version": 2})).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.json::<Value>().await.unwrap()["version"], 2);
    let res = patch(
        &app,
        t,
        None,
        json!({"version": 2.0, "display_name": null, "metadata": null}),
    )
    .await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "2.0 is an integer in JSON Schema; null means absent"
    );
}

/// `GET /v1/me` may come from this instance's cache for `cache.user_ttl_ms`; a change made
/// elsewhere (here: straight in the database) shows once that time has passed, and this
/// instance's own writes show at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_profile_reads_expire() {
    let app = TestApp::sqlite_with_user_ttl(300).await;
    let user = app.user("cora").await;
    let me: Value = app.me(&user.access_token).await;
    assert_eq!(me["display_name"], "cora");
    app.rename_elsewhere(user.id, "changed elsewhere").await;
    tokio::time::sleep(std::time::Duration::from_millis(350)).await;
    let me: Value = app.me(&user.access_token).await;
    assert_eq!(me["display_name"], "changed elsewhere");
    let res = patch(
        &app,
        &user.access_token,
        None,
        json!({"display_name": "mine", "version": 1}),
    )
    .await;
    assert_eq!(res.status(), StatusCode::OK);
    let me: Value = app.me(&user.access_token).await;
    assert_eq!(
        (me["display_name"].as_str(), me["version"].as_i64()),
        (Some("mine"), Some(2))
    );
}

/// A user who keeps asking is served from the cache while the row is read again once the entry
/// is past three quarters of `cache.user_ttl_ms`: a change made elsewhere shows before the
/// entry that was served would have expired, and no request waits for that read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_users_profile_is_read_again_before_it_expires() {
    let app = TestApp::sqlite_with_user_ttl(2_000).await;
    let user = app.user("dora").await;
    let me: Value = app.me(&user.access_token).await;
    assert_eq!(me["display_name"], "dora");
    app.rename_elsewhere(user.id, "changed elsewhere").await;
    // Past three quarters of the TTL: this answer (the cached row, or the new one if the
    // machine stalled past the TTL) starts the re-read.
    tokio::time::sleep(std::time::Duration::from_millis(1_600)).await;
    let _: Value = app.me(&user.access_token).await;
    // Still inside the first entry's TTL, which alone would have kept serving "dora".
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let me: Value = app.me(&user.access_token).await;
    assert_eq!(me["display_name"], "changed elsewhere");
}
