//! Email verification: a link mailed on registration and on request, single use and expiring
//! (by the server's clock, moved forward here), and address changes that take effect only once
//! the new address is verified.

use chrono::Duration;
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{assert_problem, TestApp, TestUser};

both_backends!(
    registration_mails_a_link_that_verifies_the_address_once,
    resent_links_work_and_expire_by_the_clock,
    an_email_change_applies_once_the_new_address_is_verified,
    concurrent_uses_of_one_verification_token_succeed_once,
    operators_verify_an_address,
    verification_is_limited_per_client,
);

/// The newest message to `email`: its kind and body.
pub async fn newest_mail(app: &TestApp, email: &str) -> (String, String) {
    app.ctx.background.idle().await;
    let mail = service::mail::Mailer::outbox(&app.ctx.db, Some(email), 1)
        .await
        .expect("outbox");
    let m = mail.into_iter().next().expect("a message to that address");
    (m.kind, m.body)
}

/// The token of the link to `{public_url}{path}?token=` in `body`.
pub fn link_token(app: &TestApp, body: &str, path: &str) -> String {
    let prefix = format!("{}{path}?token=", app.ctx.public_url());
    let start = body
        .find(&prefix)
        .expect("the link, on the configured public URL")
        + prefix.len();
    body[start..]
        .split_whitespace()
        .next()
        .expect("token")
        .to_owned()
}

async fn verification_token(app: &TestApp, email: &str) -> String {
    let (_, body) = newest_mail(app, email).await;
    link_token(app, &body, "/verify-email")
}

pub async fn verify(app: &TestApp, token: &str) -> reqwest::Response {
    app.post_json("/v1/auth/email/verify", &json!({ "token": token }))
        .await
}

async fn resend(app: &TestApp, user: &TestUser) -> reqwest::Response {
    app.post_authed("/v1/auth/email/resend", &user.access_token, &json!({}))
        .await
}

async fn registration_mails_a_link_that_verifies_the_address_once(app: TestApp) {
    let user = app.user("vera").await; // an unverified user may sign in
    assert_eq!(app.me(&user.access_token).await["email_verified"], false);
    let (kind, body) = newest_mail(&app, &user.email).await;
    assert_eq!(kind, "email_verification");
    let token = link_token(&app, &body, "/verify-email");

    for bad in ["", "not-a-token", &"x".repeat(300)] {
        assert_problem(
            verify(&app, bad).await,
            StatusCode::UNAUTHORIZED,
            "invalid_verification_token",
        )
        .await;
    }
    assert_eq!(verify(&app, &token).await.status(), StatusCode::NO_CONTENT);
    assert_eq!(app.me(&user.access_token).await["email_verified"], true);
    assert_problem(
        verify(&app, &token).await,
        StatusCode::UNAUTHORIZED,
        "invalid_verification_token",
    )
    .await;
    let actions = app.audit_actions(user.id).await;
    assert!(
        actions.contains(&"user.email_verified".to_owned()),
        "{actions:?}"
    );
}

async fn resent_links_work_and_expire_by_the_clock(app: TestApp) {
    let user = app.user("rhea").await;
    assert_problem(
        app.post_json("/v1/auth/email/resend", &json!({})).await,
        StatusCode::UNAUTHORIZED,
        "missing_token",
    )
    .await;
    let first = verification_token(&app, &user.email).await;
    assert_eq!(resend(&app, &user).await.status(), StatusCode::ACCEPTED);
    let second = verification_token(&app, &user.email).await;
    assert_ne!(first, second);

    // Both expire after `auth.email_verification_ttl_secs`.
    let ttl = app.ctx.settings.auth.email_verification_ttl_secs;
    app.ctx.clock.advance(Duration::seconds(ttl + 1));
    for token in [&first, &second] {
        assert_problem(
            verify(&app, token).await,
            StatusCode::UNAUTHORIZED,
            "invalid_verification_token",
        )
        .await;
    }
    assert_eq!(resend(&app, &user).await.status(), StatusCode::ACCEPTED);
    let third = verification_token(&app, &user.email).await;
    // Just before its expiry it still works.
    app.ctx.clock.advance(Duration::seconds(ttl - 5));
    assert_eq!(verify(&app, &third).await.status(), StatusCode::NO_CONTENT);
    assert_problem(
        resend(&app, &user).await,
        StatusCode::CONFLICT,
        "email_already_verified",
    )
    .await;
}

async fn an_email_change_applies_once_the_new_address_is_verified(app: TestApp) {
    let user = app.user("chad").await;
    let old_link = verification_token(&app, &user.email).await;
    let other = app.user("otto").await;
    let new_email = format!("chad-new-{}@example.com", Uuid::new_v4().simple());
    let change = |email: &str| {
        let body = json!({ "email": email });
        let token = user.access_token.clone();
        let app = &app;
        async move { app.post_authed("/v1/me/email", &token, &body).await }
    };

    assert_problem(
        change(&other.email).await,
        StatusCode::CONFLICT,
        "email_taken",
    )
    .await;
    assert_problem(
        change(&user.email.to_uppercase()).await,
        StatusCode::CONFLICT,
        "email_unchanged",
    )
    .await;
    assert_problem(
        change("not an address").await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;

    assert_eq!(change(&new_email).await.status(), StatusCode::ACCEPTED);
    // Nothing changes until the new address is verified.
    let me = app.me(&user.access_token).await;
    assert_eq!(me["email"], user.email.as_str());
    let (kind, body) = newest_mail(&app, &new_email).await;
    assert_eq!(kind, "email_change");
    let token = link_token(&app, &body, "/verify-email");
    assert_eq!(verify(&app, &token).await.status(), StatusCode::NO_CONTENT);

    let me: Value = app.me(&user.access_token).await;
    assert_eq!(me["email"], new_email.as_str());
    assert_eq!(me["email_verified"], true);
    assert_eq!(
        app.login(&new_email, &user.password).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.login(&user.email, &user.password).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // The link for the address the account no longer has proves nothing now.
    assert_problem(
        verify(&app, &old_link).await,
        StatusCode::UNAUTHORIZED,
        "invalid_verification_token",
    )
    .await;
    assert!(app
        .audit_actions(user.id)
        .await
        .contains(&"user.email_change_requested".to_owned()));

    // A change whose address another account takes before it is verified fails then.
    let late = format!("late-{}@example.com", Uuid::new_v4().simple());
    assert_eq!(change(&late).await.status(), StatusCode::ACCEPTED);
    let token = verification_token(&app, &late).await;
    let res = app.register(&late, crate::helpers::PASSWORD, "Late").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_problem(
        verify(&app, &token).await,
        StatusCode::CONFLICT,
        "email_taken",
    )
    .await;
    assert_eq!(
        app.me(&user.access_token).await["email"],
        new_email.as_str()
    );
}

async fn concurrent_uses_of_one_verification_token_succeed_once(app: TestApp) {
    let user = app.user("many").await;
    let token = verification_token(&app, &user.email).await;
    let answers = join_all((0..100).map(|_| verify(&app, &token))).await;
    let mut ok = 0;
    for res in answers {
        match res.status() {
            StatusCode::NO_CONTENT => ok += 1,
            _ => {
                assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_verification_token").await;
            }
        }
    }
    assert_eq!(ok, 1, "exactly one use succeeds");
    let verified = app
        .audit_actions(user.id)
        .await
        .into_iter()
        .filter(|a| a == "user.email_verified")
        .count();
    assert_eq!(verified, 1);
}

async fn operators_verify_an_address(app: TestApp) {
    use service::one_time_tokens::EmailVerificationService;
    let user = app.user("opal").await;
    let email = service::domain::Email::parse(&user.email).expect("email");
    assert!(
        EmailVerificationService::verify_by_operator(&app.ctx.db, &email)
            .await
            .expect("verify")
    );
    assert!(
        !EmailVerificationService::verify_by_operator(&app.ctx.db, &email)
            .await
            .expect("again")
    );
    // `cache.user_ttl_ms` may serve the old row briefly; the stored one is verified.
    let stored = service::users::UserService::get(&app.ctx.db, user.id)
        .await
        .expect("user");
    assert!(stored.email_verified_at.is_some());
    let nobody = service::domain::Email::parse("nobody@example.com").expect("email");
    assert!(matches!(
        EmailVerificationService::verify_by_operator(&app.ctx.db, &nobody).await,
        Err(service::ServiceError::NotFound)
    ));
}

/// Verification attempts and requests for links share one per-client limit: 429 beyond it.
async fn verification_is_limited_per_client(owner: TestApp) {
    // A second server on the test's database (which `owner` keeps), with a low limit.
    let url = owner.ctx.settings.database.url.clone();
    let app = TestApp::spawn_with_database(&url, |s| {
        s.limits.email_verification_max = 2;
        s.limits.email_verification_window_secs = 60;
    })
    .await;
    let user = app.user("limv").await;
    let token = verification_token(&app, &user.email).await;
    assert_eq!(resend(&app, &user).await.status(), StatusCode::ACCEPTED); // 1
    assert_problem(
        verify(&app, "guess").await, // 2
        StatusCode::UNAUTHORIZED,
        "invalid_verification_token",
    )
    .await;
    assert_problem(
        verify(&app, &token).await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    )
    .await;
    app.ctx.clock.advance(Duration::seconds(121));
    assert_eq!(verify(&app, &token).await.status(), StatusCode::NO_CONTENT);
}
