//! Password reset: the same answer for every address, a mailed single-use link that expires
//! (by the server's clock, moved forward here), dies when the password changes any other way,
//! and signs the user out everywhere.

use chrono::Duration;
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::both_backends;
use crate::email_verification::{link_token, newest_mail};
use crate::helpers::{assert_problem, TestApp, TestUser};

both_backends!(
    forgot_answers_every_address_byte_for_byte_alike,
    a_reset_sets_the_password_and_ends_every_session,
    reset_links_expire_and_die_when_the_password_changes,
    concurrent_uses_of_one_reset_token_succeed_once,
    reset_requests_are_limited_per_client,
);

const NEW_PASSWORD: &str = "a brand new passphrase";

async fn forgot(app: &TestApp, email: &str) -> reqwest::Response {
    app.post_json("/v1/auth/password/forgot", &json!({ "email": email }))
        .await
}

async fn reset(app: &TestApp, token: &str, new_password: &str) -> reqwest::Response {
    app.post_json(
        "/v1/auth/password/reset",
        &json!({ "token": token, "new_password": new_password }),
    )
    .await
}

/// Asks for a reset of `user`'s password; the token from the mailed link.
async fn reset_token(app: &TestApp, user: &TestUser) -> String {
    assert_eq!(
        forgot(app, &user.email).await.status(),
        StatusCode::ACCEPTED
    );
    let (kind, body) = newest_mail(app, &user.email).await;
    assert_eq!(kind, "password_reset");
    link_token(app, &body, "/reset-password")
}

/// Status, headers other than the request id and date, and the body's bytes.
async fn answer(res: reqwest::Response) -> (StatusCode, Vec<(String, Vec<u8>)>, Vec<u8>) {
    let status = res.status();
    let mut headers: Vec<(String, Vec<u8>)> = res
        .headers()
        .iter()
        .filter(|(name, _)| !matches!(name.as_str(), "x-request-id" | "date"))
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect();
    headers.sort();
    let body = res.bytes().await.expect("body").to_vec();
    (status, headers, body)
}

async fn forgot_answers_every_address_byte_for_byte_alike(app: TestApp) {
    let known = app.user("known").await;
    let disabled = app.user("off").await;
    service::users::UserService::set_status(
        &app.ctx.db,
        disabled.id,
        service::users::UserStatus::Disabled,
    )
    .await
    .expect("disable");
    let unknown = format!("nobody-{}@example.com", Uuid::new_v4().simple());

    let reference = answer(forgot(&app, &known.email).await).await;
    assert_eq!(reference.0, StatusCode::ACCEPTED);
    for email in [
        unknown.clone(),
        known.email.to_uppercase(),
        disabled.email.clone(),
        known.email.clone(),
    ] {
        assert_eq!(
            answer(forgot(&app, &email).await).await,
            reference,
            "{email}"
        );
    }
    assert_problem(
        forgot(&app, "not an address").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;

    // Only the active account got mail: three links, one per request for its address.
    app.ctx.background.idle().await;
    let sent = |to: String| {
        let db = app.ctx.db.clone();
        async move {
            service::mail::Mailer::outbox(&db, Some(&to), 100)
                .await
                .expect("outbox")
                .into_iter()
                .filter(|m| m.kind == "password_reset")
                .count()
        }
    };
    assert_eq!(sent(known.email.clone()).await, 3);
    assert_eq!(sent(disabled.email.clone()).await, 0);
    assert_eq!(sent(unknown).await, 0);
}

async fn a_reset_sets_the_password_and_ends_every_session(app: TestApp) {
    let user = app.user("rose").await;
    let second = app.sign_in(&user).await;
    let token = reset_token(&app, &user).await;

    // A password the policy refuses does not use the token up.
    let weak = assert_problem(
        reset(&app, &token, "short").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    assert_eq!(weak["errors"][0]["field"], "new_password");
    assert_eq!(
        reset(&app, &token, NEW_PASSWORD).await.status(),
        StatusCode::NO_CONTENT
    );

    app.assert_signed_out(&user).await;
    app.assert_signed_out(&second).await;
    assert_eq!(
        app.login(&user.email, &user.password).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login(&user.email, NEW_PASSWORD).await.status(),
        StatusCode::OK
    );
    assert_problem(
        reset(&app, &token, "yet another passphrase").await,
        StatusCode::UNAUTHORIZED,
        "invalid_reset_token",
    )
    .await;
    let actions = app.audit_actions(user.id).await;
    assert!(
        actions.contains(&"user.password_reset".to_owned()),
        "{actions:?}"
    );
}

async fn reset_links_expire_and_die_when_the_password_changes(app: TestApp) {
    let user = app.user("ezra").await;

    // Expired by the clock (`auth.password_reset_ttl_secs`).
    let token = reset_token(&app, &user).await;
    let ttl = app.ctx.settings.auth.password_reset_ttl_secs;
    app.ctx.clock.advance(Duration::seconds(ttl + 1));
    assert_problem(
        reset(&app, &token, NEW_PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid_reset_token",
    )
    .await;

    // Issued, then the password changed through /v1/me/password: the link is dead.
    let token = reset_token(&app, &user).await;
    app.ctx.clock.advance(Duration::seconds(ttl - 5)); // not expired: 5 s left
    let changed = app
        .post_authed(
            "/v1/me/password",
            &user.access_token,
            &json!({ "current_password": user.password, "new_password": "changed the usual way" }),
        )
        .await;
    assert_eq!(changed.status(), StatusCode::NO_CONTENT);
    assert_problem(
        reset(&app, &token, NEW_PASSWORD).await,
        StatusCode::UNAUTHORIZED,
        "invalid_reset_token",
    )
    .await;
    assert_eq!(
        app.login(&user.email, "changed the usual way")
            .await
            .status(),
        StatusCode::OK
    );

    // Two links: using one kills the other (the password it was bound to is gone).
    let first = reset_token(&app, &user).await;
    let second = reset_token(&app, &user).await;
    assert_eq!(
        reset(&app, &second, NEW_PASSWORD).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_problem(
        reset(&app, &first, "another new passphrase").await,
        StatusCode::UNAUTHORIZED,
        "invalid_reset_token",
    )
    .await;
    for bad in ["", "nonsense"] {
        assert_problem(
            reset(&app, bad, NEW_PASSWORD).await,
            StatusCode::UNAUTHORIZED,
            "invalid_reset_token",
        )
        .await;
    }
}

async fn concurrent_uses_of_one_reset_token_succeed_once(app: TestApp) {
    let user = app.user("hundred").await;
    let token = reset_token(&app, &user).await;
    let answers = join_all((0..100).map(|i| {
        let token = token.clone();
        let app = &app;
        async move { reset(app, &token, &format!("{NEW_PASSWORD} number {i}")).await }
    }))
    .await;
    let mut winners = Vec::new();
    for (i, res) in answers.into_iter().enumerate() {
        if res.status() == StatusCode::NO_CONTENT {
            winners.push(i);
        } else {
            assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_reset_token").await;
        }
    }
    assert_eq!(winners.len(), 1, "exactly one use succeeds");
    let password = format!("{NEW_PASSWORD} number {}", winners[0]);
    assert_eq!(
        app.login(&user.email, &password).await.status(),
        StatusCode::OK
    );
    let resets = app
        .audit_actions(user.id)
        .await
        .into_iter()
        .filter(|a| a == "user.password_reset")
        .count();
    assert_eq!(resets, 1);
}

/// Reset requests and reset attempts share one per-client limit; beyond it, 429 with
/// `Retry-After`, whatever address or token the request names.
async fn reset_requests_are_limited_per_client(owner: TestApp) {
    // A second server on the test's database (which `owner` keeps), with a low limit.
    let url = owner.ctx.settings.database.url.clone();
    let app = TestApp::spawn_with_database(&url, |s| {
        s.limits.password_reset_max = 3;
        s.limits.password_reset_window_secs = 60;
    })
    .await;
    let user = app.user("lim").await;
    let token = reset_token(&app, &user).await; // 1
    assert_eq!(
        forgot(&app, "x@example.com").await.status(),
        StatusCode::ACCEPTED
    ); // 2
    assert_problem(
        reset(&app, "nonsense", NEW_PASSWORD).await, // 3
        StatusCode::UNAUTHORIZED,
        "invalid_reset_token",
    )
    .await;
    for res in [
        forgot(&app, &user.email).await,
        reset(&app, &token, NEW_PASSWORD).await,
    ] {
        assert!(res.headers().contains_key("retry-after"));
        assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    }
    // Once the windows have passed, the same link works.
    app.ctx.clock.advance(Duration::seconds(121));
    assert_eq!(
        reset(&app, &token, NEW_PASSWORD).await.status(),
        StatusCode::NO_CONTENT
    );
}
