//! Register, login, refresh rotation with reuse detection, logout.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{assert_problem, TestApp, PASSWORD};

both_backends!(
    register_creates_a_user,
    register_rejects_bad_input,
    register_duplicate_email_is_409_case_insensitively,
    login_returns_a_token_pair,
    login_failures_do_not_reveal_whether_the_account_exists,
    login_of_disabled_user_is_refused,
    login_records_the_session_its_token_and_the_event,
    a_sign_in_verified_against_a_stale_row_opens_nothing,
    refresh_rotates_and_reuse_revokes_the_session,
    refresh_rejects_unknown_tokens,
    refresh_records_the_sessions_last_sign_of_life,
    refresh_stops_at_once_for_disabled_users,
    logout_revokes_the_session,
);

async fn register_creates_a_user(app: TestApp) {
    let res = app
        .register("Grace.Hopper@Example.COM", PASSWORD, " Grace Hopper ")
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["email"], "grace.hopper@example.com");
    assert_eq!(body["display_name"], "Grace Hopper");
    assert_eq!(body["status"], "active");
    assert_eq!(body["version"], 1);
    assert_eq!(body["email_verified"], false);
    assert!(body.get("password_hash").is_none() && body.get("password").is_none());
    let id: uuid::Uuid = body["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(id.get_version_num(), 7);
    assert_eq!(app.audit_actions(id).await, vec!["user.registered"]);
    // The stored hash is Argon2id with the configured (test) parameters, never the password.
    let user = service::users::UserService::get(&app.ctx.db, id)
        .await
        .unwrap();
    assert!(user
        .password_hash
        .starts_with("$argon2id$v=19$m=64,t=1,p=1$"));
    assert!(!user.password_hash.contains(PASSWORD));
}

async fn register_rejects_bad_input(app: TestApp) {
    let long = "x".repeat(129);
    let ok_128 = "y".repeat(127) + "z";
    let cases: Vec<(Value, StatusCode, &str, Option<&str>)> = vec![
        (
            json!({"email": "not-an-email", "password": PASSWORD, "display_name": "A"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("email"),
        ),
        (
            json!({"email": "a@example.com", "password": "short pass", "display_name": "A"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("password"),
        ),
        (
            json!({"email": "a@example.com", "password": long, "display_name": "A"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("password"),
        ),
        (
            json!({"email": "a@example.com", "password": "Password1234", "display_name": "A"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("password"),
        ),
        (
            json!({"email": "a@example.com", "password": PASSWORD, "display_name": "   "}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            Some("display_name"),
        ),
        (
            json!({"email": "a@example.com", "password": PASSWORD}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            None,
        ),
        (
            json!({"email": "a@example.com", "password": PASSWORD, "display_name": 5}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            None,
        ),
        (
            json!({"email": "a@example.com", "password": PASSWORD, "display_name": "A", "status": "disabled"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            None,
        ),
        (
            json!(["a@example.com"]),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            None,
        ),
        (
            json!(null),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            None,
        ),
    ];
    for (body, status, code, field) in cases {
        let res = app.post_json("/v1/auth/register", &body).await;
        let problem = assert_problem(res, status, code).await;
        if let Some(field) = field {
            let fields: Vec<&str> = problem["errors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["field"].as_str().unwrap())
                .collect();
            assert_eq!(fields, vec![field], "{body}");
        }
    }
    // Every bad field is reported at once.
    let res = app
        .post_json(
            "/v1/auth/register",
            &json!({"email": "nope", "password": "short", "display_name": ""}),
        )
        .await;
    let problem = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let codes: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_str().unwrap())
        .collect();
    assert_eq!(
        codes,
        vec![
            "invalid_email",
            "password_too_short",
            "invalid_display_name"
        ]
    );
    // 128 characters is allowed, and the password is not truncated: a 129th character matters.
    let res = app.register("long@example.com", &ok_128, "Long").await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert_eq!(
        app.login("long@example.com", &ok_128).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.login("long@example.com", &(ok_128.clone() + "!"))
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.login("long@example.com", &ok_128[..72]).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // Nothing half-written: no user rows besides the one valid registration.
    use sea_orm::{EntityTrait, PaginatorTrait};
    assert_eq!(
        entity::users::Entity::find()
            .count(&app.ctx.db)
            .await
            .unwrap(),
        1
    );
}

async fn register_duplicate_email_is_409_case_insensitively(app: TestApp) {
    assert_eq!(
        app.register("dup@example.com", PASSWORD, "One")
            .await
            .status(),
        StatusCode::CREATED
    );
    let res = app.register("DUP@example.com", PASSWORD, "Two").await;
    assert_problem(res, StatusCode::CONFLICT, "email_taken").await;
}

async fn login_returns_a_token_pair(app: TestApp) {
    app.register("ada@example.com", PASSWORD, "Ada").await;
    let res = app.login("ADA@example.com", PASSWORD).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["cache-control"], "no-store");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 900);
    assert_eq!(body["access_token"].as_str().unwrap().split('.').count(), 3);
    assert!(body["refresh_token"].as_str().unwrap().len() >= 43);
    let me = app
        .get_authed("/v1/me", body["access_token"].as_str().unwrap())
        .await;
    assert_eq!(me.status(), StatusCode::OK);
    let me: Value = me.json().await.unwrap();
    assert_eq!(me["email"], "ada@example.com");
    let user_id = me["id"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        app.audit_actions(user_id).await,
        vec!["user.registered", "auth.login_succeeded"]
    );
    // Refresh tokens are stored only as hashes.
    use sea_orm::EntityTrait;
    let rows = entity::refresh_tokens::Entity::find()
        .all(&app.ctx.db)
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_ne!(rows[0].token_hash, body["refresh_token"].as_str().unwrap());
    assert_eq!(
        rows[0].token_hash,
        service::tokens::hash_token(body["refresh_token"].as_str().unwrap())
    );
}

async fn login_failures_do_not_reveal_whether_the_account_exists(app: TestApp) {
    app.register("known@example.com", PASSWORD, "Known").await;
    let wrong_password = app
        .login("known@example.com", "not the right password")
        .await;
    let unknown_email = app
        .login("unknown@example.com", "not the right password")
        .await;
    let mut a = assert_problem(
        wrong_password,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    let mut b = assert_problem(
        unknown_email,
        StatusCode::UNAUTHORIZED,
        "invalid_credentials",
    )
    .await;
    a.as_object_mut().unwrap().remove("request_id");
    b.as_object_mut().unwrap().remove("request_id");
    assert_eq!(a, b, "the two failures must be indistinguishable");
    let res = app.login("not an email", PASSWORD).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

async fn login_of_disabled_user_is_refused(app: TestApp) {
    let user = app.user("mallory").await;
    service::users::UserService::set_status(
        &app.ctx.db,
        user.id,
        service::users::UserStatus::Disabled,
    )
    .await
    .unwrap();
    let res = app.login(&user.email, PASSWORD).await;
    assert_problem(res, StatusCode::FORBIDDEN, "account_disabled").await;
    // A wrong password still says only "invalid credentials".
    let res = app.login(&user.email, "some other password").await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
}

async fn refresh_rotates_and_reuse_revokes_the_session(app: TestApp) {
    let user = app.user("rita").await;
    let res = app.refresh(&user.refresh_token).await;
    assert_eq!(res.status(), StatusCode::OK);
    let first: Value = res.json().await.unwrap();
    let rotated = first["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(rotated, user.refresh_token);
    assert_eq!(first["session_id"], user.session_id.to_string());

    let res = app.refresh(&rotated).await;
    assert_eq!(res.status(), StatusCode::OK);
    let second: Value = res.json().await.unwrap();
    let newest = second["refresh_token"].as_str().unwrap().to_owned();

    // Replaying an old token is reuse: the whole session ends, the newest token included.
    let res = app.refresh(&user.refresh_token).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "refresh_token_reused").await;
    let res = app.refresh(&newest).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    let res = app
        .get_authed("/v1/me", second["access_token"].as_str().unwrap())
        .await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "session_revoked").await;

    let session = app.session(user.session_id).await;
    assert!(session.revoked_at.is_some());
    assert_eq!(
        session.revoked_reason.as_deref(),
        Some("refresh_token_reuse")
    );
    assert!(app
        .audit_actions(user.id)
        .await
        .contains(&"auth.refresh_token_reused".to_owned()));
}

/// A refresh rewrites its session's last sign of life only when there is something new to
/// record: another IP or user agent, or a `last_seen_at` at least a minute old.
async fn refresh_records_the_sessions_last_sign_of_life(app: TestApp) {
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    use service::auth::LAST_SEEN_GRANULARITY;

    let user = app.user("lars").await;
    let refresh_as = |token: String, agent: &'static str| {
        let app = &app;
        async move {
            let res = app.refresh_with_agent(&token, agent).await;
            assert_eq!(res.status(), StatusCode::OK);
            let body: Value = res.json().await.unwrap();
            body["refresh_token"].as_str().unwrap().to_owned()
        }
    };
    let token = refresh_as(user.refresh_token.clone(), "phone/1").await;
    let moved = app.session(user.session_id).await;
    assert_eq!(moved.user_agent.as_deref(), Some("phone/1"));
    assert!(moved.last_seen_at > moved.created_at);

    // Same device, a moment later: nothing new, the row is left alone. (A new IP is recorded the
    // same way as a new user agent; every test request comes from 127.0.0.1, so only the agent
    // can change here.)
    let token = refresh_as(token, "phone/1").await;
    assert_eq!(app.session(user.session_id).await, moved);

    // A minute later: the time is recorded again.
    let stale = moved.last_seen_at - LAST_SEEN_GRANULARITY;
    entity::sessions::Entity::update_many()
        .col_expr(entity::sessions::Column::LastSeenAt, Expr::value(stale))
        .filter(entity::sessions::Column::Id.eq(user.session_id))
        .exec(&app.ctx.db)
        .await
        .unwrap();
    let before = chrono::Utc::now();
    refresh_as(token, "phone/1").await;
    let seen = app.session(user.session_id).await;
    assert!(seen.last_seen_at >= before - chrono::Duration::milliseconds(1));
    assert_eq!(seen.user_agent.as_deref(), Some("phone/1"));
    assert!(seen.revoked_at.is_none());
}

async fn refresh_rejects_unknown_tokens(app: TestApp) {
    for token in ["", "garbage", &"A".repeat(43)] {
        let res = app.refresh(token).await;
        assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    }
    let res = app.post_json("/v1/auth/refresh", &json!({})).await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "invalid_body").await;
}

async fn refresh_stops_at_once_for_disabled_users(app: TestApp) {
    use sea_orm::sea_query::Expr;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    // Disabled behind the service's back (no session revoked): the next refresh notices.
    let user = app.user("dora").await;
    entity::users::Entity::update_many()
        .col_expr(
            entity::users::Column::Status,
            Expr::value(service::users::UserStatus::Disabled),
        )
        .filter(entity::users::Column::Id.eq(user.id))
        .exec(&app.ctx.db)
        .await
        .unwrap();
    let res = app.refresh(&user.refresh_token).await;
    assert_problem(res, StatusCode::FORBIDDEN, "account_disabled").await;
    let session = app.session(user.session_id).await;
    assert_eq!(session.revoked_reason.as_deref(), Some("user_disabled"));

    // Disabled through the service: every session ends at once, and re-enabling does not revive them.
    let user = app.user("dana").await;
    service::users::UserService::set_status(
        &app.ctx.db,
        user.id,
        service::users::UserStatus::Disabled,
    )
    .await
    .unwrap();
    let res = app.refresh(&user.refresh_token).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    service::users::UserService::set_status(
        &app.ctx.db,
        user.id,
        service::users::UserStatus::Active,
    )
    .await
    .unwrap();
    assert_eq!(
        app.refresh(&user.refresh_token).await.status(),
        StatusCode::UNAUTHORIZED
    );
}

async fn logout_revokes_the_session(app: TestApp) {
    let user = app.user("lou").await;
    let other = app.sign_in(&user).await;
    let res = app
        .post_authed("/v1/auth/logout", &user.access_token, &json!({}))
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app.get_authed("/v1/me", &user.access_token).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "session_revoked").await;
    let res = app.refresh(&user.refresh_token).await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_refresh_token").await;
    // Other sessions are untouched.
    assert_eq!(
        app.get_authed("/v1/me", &other.access_token).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        app.refresh(&other.refresh_token).await.status(),
        StatusCode::OK
    );
    let res = app
        .client
        .post(app.url("/v1/auth/logout"))
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::UNAUTHORIZED, "missing_token").await;
}

/// Everything one successful sign-in writes, checked row by row (PostgreSQL writes it in one
/// statement, SQLite in a transaction: both must store the same thing).
async fn login_records_the_session_its_token_and_the_event(app: TestApp) {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let user = app.user("lin").await;
    // A failed attempt first: the success resets the counter.
    let res = app.login(&user.email, "not the right password").await;
    assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_credentials").await;
    let long_agent = format!("agent/{}", "x".repeat(600));
    let res = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("user-agent", &long_agent)
        .json(&json!({"email": user.email, "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let session_id: uuid::Uuid = body["session_id"].as_str().unwrap().parse().unwrap();

    let session = app.session(session_id).await;
    assert_eq!(session.user_id, user.id);
    assert_eq!(session.ip.as_deref(), Some("127.0.0.1"));
    let kept: String = long_agent.chars().take(512).collect();
    assert_eq!(session.user_agent.as_deref(), Some(kept.as_str()));
    assert_eq!(session.created_at, session.last_seen_at);
    assert_eq!(
        (session.expires_at - session.created_at).num_seconds(),
        app.ctx.settings.auth.session_ttl_secs
    );
    assert!(session.revoked_at.is_none());
    assert_eq!(session.mfa_level, 0);

    let tokens = entity::refresh_tokens::Entity::find()
        .filter(entity::refresh_tokens::Column::SessionId.eq(session_id))
        .all(&app.ctx.db)
        .await
        .unwrap();
    assert_eq!(tokens.len(), 1);
    let token = &tokens[0];
    assert_eq!(
        token.token_hash,
        service::tokens::hash_token(body["refresh_token"].as_str().unwrap())
    );
    assert!(token.parent_id.is_none() && token.used_at.is_none());
    assert_eq!(token.created_at, session.created_at);
    assert_eq!(
        token.expires_at,
        std::cmp::min(
            session.created_at
                + chrono::Duration::seconds(app.ctx.settings.auth.refresh_token_ttl_secs),
            session.expires_at
        )
    );

    let event = entity::audit_events::Entity::find()
        .filter(entity::audit_events::Column::ActorSessionId.eq(session_id))
        .one(&app.ctx.db)
        .await
        .unwrap()
        .expect("the sign-in is audited");
    assert_eq!(event.action, "auth.login_succeeded");
    assert_eq!(event.actor_user_id, Some(user.id));
    assert_eq!(event.target_type.as_deref(), Some("session"));
    assert_eq!(event.target_id, Some(session_id.to_string()));
    assert_eq!(event.ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(event.user_agent.as_deref(), Some(kept.as_str()));
    assert!(event.request_id.is_some());
    assert_eq!(event.details, json!({}));

    let row = service::users::UserService::get(&app.ctx.db, user.id)
        .await
        .unwrap();
    assert_eq!(row.failed_login_count, 0);
    assert_eq!(row.last_login_at, Some(session.created_at));
}

/// A sign-in verifies the password against the row it read before hashing; if the password was
/// changed or the account disabled in between, opening the session writes nothing at all.
async fn a_sign_in_verified_against_a_stale_row_opens_nothing(app: TestApp) {
    use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
    use service::auth::AuthService;
    use service::context::RequestMeta;
    use service::users::UserService;
    let user = app.user("stale").await;
    let sessions = || async {
        entity::sessions::Entity::find()
            .filter(entity::sessions::Column::UserId.eq(user.id))
            .count(&app.ctx.db)
            .await
            .unwrap()
    };
    let stale = UserService::get(&app.ctx.db, user.id).await.unwrap();
    let res = app
        .post_authed(
            "/v1/me/password",
            &user.access_token,
            &json!({"current_password": PASSWORD, "new_password": "a brand new passphrase"}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let (before, audit_before) = (sessions().await, app.audit_actions(user.id).await);
    let meta = RequestMeta::default();
    let now = chrono::Utc::now();
    let opened = AuthService::open_verified_session(&app.ctx, &meta, &stale, now)
        .await
        .unwrap();
    assert!(opened.is_none(), "the replaced password opens nothing");
    assert_eq!(sessions().await, before);
    assert_eq!(app.audit_actions(user.id).await, audit_before);

    // The current row opens a session; once the account is disabled, the same row no longer does.
    let current = UserService::get(&app.ctx.db, user.id).await.unwrap();
    let opened = AuthService::open_verified_session(&app.ctx, &meta, &current, now)
        .await
        .unwrap();
    let (session_id, _) = opened.expect("the current row opens a session");
    assert_eq!(app.session(session_id).await.user_id, user.id);
    UserService::set_status(&app.ctx.db, user.id, service::users::UserStatus::Disabled)
        .await
        .unwrap();
    let before = sessions().await;
    let opened = AuthService::open_verified_session(&app.ctx, &meta, &current, now)
        .await
        .unwrap();
    assert!(opened.is_none(), "a disabled account opens nothing");
    assert_eq!(sessions().await, before);
}

/// On PostgreSQL a refresh records its session's last sign of life after the rotation has
/// committed. If that bookkeeping fails, the refresh still answers with the pair it stored (the
/// presented token is spent: failing here would sign the client out), and that pair works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_last_seen_update_does_not_fail_the_refresh_on_postgres() {
    use sea_orm::ConnectionTrait;

    let Some(app) = TestApp::spawn(crate::helpers::Backend::Postgres).await else {
        return;
    };
    let user = app.user("lena").await;
    app.ctx
        .db
        .execute_unprepared(
            "CREATE FUNCTION refuse_touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN \
             RAISE EXCEPTION 'last_seen_at refused by the test'; END $$; \
             CREATE TRIGGER refuse_touch BEFORE UPDATE OF last_seen_at ON sessions \
             FOR EACH ROW EXECUTE FUNCTION refuse_touch()",
        )
        .await
        .unwrap();
    let before = app.session(user.session_id).await;

    // Another user agent: the session's record is stale, and recording it fails.
    let res = app
        .client
        .post(app.url("/v1/auth/refresh"))
        .header("user-agent", "laptop/2")
        .json(&json!({ "refresh_token": user.refresh_token }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        app.session(user.session_id).await,
        before,
        "nothing recorded"
    );

    let me = app
        .client
        .get(app.url("/v1/me"))
        .bearer_auth(body["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), StatusCode::OK);
    let next = app.refresh(body["refresh_token"].as_str().unwrap()).await;
    assert_eq!(
        next.status(),
        StatusCode::OK,
        "the stored successor rotates"
    );
    // The spent token stays spent.
    assert_eq!(
        app.refresh(&user.refresh_token).await.status(),
        StatusCode::UNAUTHORIZED
    );
}
