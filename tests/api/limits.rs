//! Brute-force protection and rate limits (kept in the database): the per-account budget under
//! parallel attempts, growing delays judged by the server's clock (moved by the test, never
//! slept), unknown emails throttled exactly like real ones, per-IP limits with `Retry-After`,
//! the client IP behind trusted proxies, and cheap refusals before any hashing.

use futures_util::future::join_all;
use reqwest::{Response, StatusCode};
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{Backend, TestApp, PASSWORD};

both_backends!(
    parallel_wrong_passwords_never_exceed_the_budget,
    delays_grow_are_bounded_and_a_correct_password_after_them_works,
    an_unknown_email_is_throttled_exactly_like_a_real_account,
    change_password_checks_the_session_then_the_budget,
    sign_in_per_ip_limit_answers_429_with_retry_after,
    registration_per_ip_limit_and_taken_email_before_hashing,
    trusted_proxies_decide_the_client_ip,
    concurrent_registrations_of_one_email_hash_once,
);

fn spawn_tweaked(
    backend: Backend,
    tweak: impl FnOnce(&mut service::config::Settings) + Send + 'static,
) -> impl std::future::Future<Output = Option<TestApp>> {
    TestApp::spawn_with(backend, tweak)
}

/// Spawns a second server like `app` (same backend) with `tweak` applied to its settings.
async fn respawn(
    app: &TestApp,
    tweak: impl FnOnce(&mut service::config::Settings) + Send + 'static,
) -> TestApp {
    let backend = match app.ctx.db.get_database_backend() {
        sea_orm::DbBackend::Sqlite => Backend::Sqlite,
        _ => Backend::Postgres,
    };
    let app = spawn_tweaked(backend, tweak)
        .await
        .expect("the backend was available a moment ago");
    // Limits are judged by the server's clock: stopped, it moves only when a test says so.
    app.ctx.clock.freeze();
    app
}

async fn status_and_retry_after(res: Response) -> (StatusCode, Option<u64>, Value) {
    let status = res.status();
    let retry = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = res.json().await.unwrap_or(Value::Null);
    (status, retry, body)
}

/// 200 wrong passwords at once for one account: exactly the budget gets checked (hashed), every
/// other attempt is 429 `rate_limited` with `Retry-After`, and nothing else happens.
async fn parallel_wrong_passwords_never_exceed_the_budget(app: TestApp) {
    let app = respawn(&app, |s| {
        // Only the 15-minute budget binds here: no delay within the burst.
        s.limits.free_failures = 1_000;
        s.limits.failure_budget = 20;
    })
    .await;
    let user = app.user("target").await;
    let hashed_before = app.ctx.hasher.hashes_computed();
    let guesses: Vec<String> = (0..200).map(|i| format!("wrong guess {i:04}")).collect();
    let results = join_all(guesses.iter().map(|g| app.login(&user.email, g))).await;
    let (mut refused_wrong, mut limited) = (0, 0);
    for res in results {
        let (status, retry, body) = status_and_retry_after(res).await;
        match status {
            StatusCode::UNAUTHORIZED => refused_wrong += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(body["code"], "rate_limited");
                assert!(retry.is_some_and(|r| r >= 1), "Retry-After on every 429");
                limited += 1;
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((refused_wrong, limited), (20, 180));
    assert_eq!(
        app.ctx.hasher.hashes_computed() - hashed_before,
        20,
        "no password check beyond the budget"
    );
    // The lockout revoked nothing: the session opened before it still works.
    app.me(&user.access_token).await;
}

/// 5 failures in a row are free; then each check waits 1, 2, 4, ... seconds (capped), judged by
/// the server's clock, which the test moves. A correct password after the wait signs in and
/// ends the run.
async fn delays_grow_are_bounded_and_a_correct_password_after_them_works(app: TestApp) {
    let app = respawn(&app, |s| {
        s.limits.max_delay_secs = 4;
    })
    .await;
    let user = app.user("slow").await;
    for _ in 0..5 {
        assert_eq!(
            app.login(&user.email, "not the password").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    let mut waits = Vec::new();
    for _ in 0..4 {
        let (status, retry, _) =
            status_and_retry_after(app.login(&user.email, PASSWORD).await).await;
        assert_eq!(
            status,
            StatusCode::TOO_MANY_REQUESTS,
            "even the right password waits"
        );
        let retry = retry.expect("Retry-After");
        waits.push(retry);
        app.ctx
            .clock
            .advance(chrono::Duration::seconds(retry as i64));
        assert_eq!(
            app.login(&user.email, "still wrong").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(waits, [1, 2, 4, 4], "doubling, capped at max_delay_secs");
    // The session opened before any of this was not touched by the lockout.
    app.me(&user.access_token).await;
    let (status, retry, _) = status_and_retry_after(app.login(&user.email, PASSWORD).await).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    app.ctx
        .clock
        .advance(chrono::Duration::seconds(retry.unwrap() as i64));
    assert_eq!(
        app.login(&user.email, PASSWORD).await.status(),
        StatusCode::OK
    );
    // The success ended the run: the next failures are free again.
    for _ in 0..5 {
        assert_eq!(
            app.login(&user.email, "wrong again").await.status(),
            StatusCode::UNAUTHORIZED
        );
    }
}

/// The same sequence for an address nobody has and for a real account gives the same answers,
/// byte for byte apart from the request id.
async fn an_unknown_email_is_throttled_exactly_like_a_real_account(app: TestApp) {
    app.ctx.clock.freeze();
    let user = app.user("known").await;
    let unknown = format!("nobody-{}", user.email);
    let mut transcripts: Vec<Vec<(StatusCode, Option<u64>, Value)>> = Vec::new();
    for email in [&user.email, &unknown] {
        let mut transcript = Vec::new();
        for step in 0..8 {
            if step == 6 {
                app.ctx.clock.advance(chrono::Duration::seconds(1));
            }
            let (status, retry, mut body) =
                status_and_retry_after(app.login(email, "a wrong password").await).await;
            body.as_object_mut().unwrap().remove("request_id");
            transcript.push((status, retry, body));
        }
        transcripts.push(transcript);
    }
    let statuses: Vec<u16> = transcripts[0].iter().map(|(s, _, _)| s.as_u16()).collect();
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429, 401, 429]);
    assert_eq!(transcripts[0], transcripts[1]);
}

/// `POST /v1/me/password` refuses a revoked session before checking anything, and spends the
/// same per-account budget as sign-in.
async fn change_password_checks_the_session_then_the_budget(app: TestApp) {
    app.ctx.clock.freeze();
    let user = app.user("changer").await;
    let second = app.sign_in(&user).await;
    let hashed_before = app.ctx.hasher.hashes_computed();
    // Revoke the second session, then guess with it: 401 session_revoked, no hash spent.
    let res = app
        .delete_authed(
            &format!("/v1/me/sessions/{}", second.session_id),
            &user.access_token,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let body =
        json!({"current_password": "a wrong guess", "new_password": "a brand new passphrase"});
    let res = app
        .post_authed("/v1/me/password", &second.access_token, &body)
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        res.json::<Value>().await.unwrap()["code"],
        "session_revoked"
    );
    assert_eq!(app.ctx.hasher.hashes_computed(), hashed_before);
    // Five wrong guesses are answered 403; the sixth check, here or at sign-in, waits.
    for _ in 0..5 {
        let res = app
            .post_authed("/v1/me/password", &user.access_token, &body)
            .await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN);
    }
    let (status, retry, _) = status_and_retry_after(
        app.post_authed("/v1/me/password", &user.access_token, &body)
            .await,
    )
    .await;
    assert_eq!((status, retry), (StatusCode::TOO_MANY_REQUESTS, Some(1)));
    let (status, _, _) = status_and_retry_after(app.login(&user.email, PASSWORD).await).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(app.ctx.hasher.hashes_computed() - hashed_before, 5);
    // After the delay the right password changes it.
    app.ctx.clock.advance(chrono::Duration::seconds(1));
    let body = json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"});
    let res = app
        .post_authed("/v1/me/password", &user.access_token, &body)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

async fn sign_in_per_ip_limit_answers_429_with_retry_after(app: TestApp) {
    let app = respawn(&app, |s| {
        s.limits.login_max = 3;
    })
    .await;
    let user = app.user("ip").await; // one sign-in spent
    assert_eq!(
        app.login(&user.email, "wrong").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login(&user.email, PASSWORD).await.status(),
        StatusCode::OK
    );
    // The fourth attempt from this IP in the window: refused before any check, whoever it names.
    let hashed_before = app.ctx.hasher.hashes_computed();
    let (status, retry, body) = status_and_retry_after(
        app.login("someone-else@example.com", "whatever it is")
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(body["code"], "rate_limited");
    let retry = retry.expect("Retry-After");
    assert!((1..=120).contains(&retry), "{retry}");
    assert_eq!(app.ctx.hasher.hashes_computed(), hashed_before);
    // Refused attempts are not counted; once the windows have passed the client is served again.
    app.ctx
        .clock
        .advance(chrono::Duration::seconds(retry as i64));
    assert_eq!(
        app.login(&user.email, PASSWORD).await.status(),
        StatusCode::OK
    );
}

async fn registration_per_ip_limit_and_taken_email_before_hashing(app: TestApp) {
    let app = respawn(&app, |s| {
        s.limits.register_max = 3;
    })
    .await;
    let email = "first@example.com";
    assert_eq!(
        app.register(email, PASSWORD, "First").await.status(),
        StatusCode::CREATED
    );
    // Taken: 409 with no hash computed.
    let hashed_before = app.ctx.hasher.hashes_computed();
    let res = app.register(email, PASSWORD, "Again").await;
    assert_eq!(res.status(), StatusCode::CONFLICT);
    assert_eq!(res.json::<Value>().await.unwrap()["code"], "email_taken");
    assert_eq!(app.ctx.hasher.hashes_computed(), hashed_before);
    assert_eq!(
        app.register("second@example.com", PASSWORD, "Second")
            .await
            .status(),
        StatusCode::CREATED
    );
    let (status, retry, _) =
        status_and_retry_after(app.register("third@example.com", PASSWORD, "Third").await).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(retry.is_some_and(|r| (1..=7200).contains(&r)));
}

async fn trusted_proxies_decide_the_client_ip(app: TestApp) {
    let login_limit = 2;
    let behind_proxy = respawn(&app, move |s| {
        s.limits.login_max = login_limit;
        s.server.trusted_proxies = vec![service::config::Cidr::parse("127.0.0.1/32").unwrap()];
    })
    .await;
    let via = |xff: &'static str| {
        let app = &behind_proxy;
        async move {
            app.client
                .post(app.url("/v1/auth/login"))
                .header("x-forwarded-for", xff)
                .json(&json!({"email": "nobody@example.com", "password": "wrong password"}))
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(via("203.0.113.1").await, StatusCode::UNAUTHORIZED);
    // What the client wrote left of the address our proxy saw is never believed.
    assert_eq!(
        via("198.51.100.7, 203.0.113.1").await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(via("203.0.113.1").await, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        via("203.0.113.2").await,
        StatusCode::UNAUTHORIZED,
        "another client"
    );

    // Without trusted proxies the header is ignored: every attempt is the peer's.
    let direct = respawn(&app, move |s| s.limits.login_max = login_limit).await;
    let mut statuses = Vec::new();
    for xff in ["203.0.113.1", "203.0.113.2", "203.0.113.3"] {
        let res = direct
            .client
            .post(direct.url("/v1/auth/login"))
            .header("x-forwarded-for", xff)
            .json(&json!({"email": "nobody@example.com", "password": "wrong password"}))
            .send()
            .await
            .unwrap();
        statuses.push(res.status().as_u16());
    }
    assert_eq!(statuses, [401, 401, 429]);
}

/// 200 registrations of one address at once: one 201, 199 409s, and one hash: the others wait
/// for the registration in progress on this instance and then see the address taken.
async fn concurrent_registrations_of_one_email_hash_once(app: TestApp) {
    let hashed_before = app.ctx.hasher.hashes_computed();
    let body = json!({"email": "once@example.com", "password": PASSWORD, "display_name": "Once"});
    let results = join_all((0..200).map(|_| app.post_json("/v1/auth/register", &body))).await;
    let statuses: Vec<StatusCode> = results.iter().map(Response::status).collect();
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let taken = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, taken), (1, 199), "{statuses:?}");
    assert_eq!(app.ctx.hasher.hashes_computed() - hashed_before, 1);
}
