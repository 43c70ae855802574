//! `auth.refresh_reuse_grace_secs`: a client whose refresh response was lost presents the spent
//! token again; within the grace, from the same user agent, once, it gets a new pair of the same
//! session. Outside any of that it is reuse and the session ends, as with the default 0.

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{Backend, TestApp};

both_backends!(a_spent_refresh_token_is_honoured_once_within_the_grace_from_the_same_agent);

const AGENT: &str = "tessera-tests/1 (tab A)";

async fn refresh_as(app: &TestApp, token: &str, agent: &str) -> (StatusCode, Value) {
    let res = app.refresh_with_agent(token, agent).await;
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn sign_in_as(app: &TestApp, email: &str, agent: &str) -> Value {
    let res = app
        .client
        .post(app.url("/v1/auth/login"))
        .header("user-agent", agent)
        .json(&json!({ "email": email, "password": crate::helpers::PASSWORD }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.json().await.unwrap()
}

async fn a_spent_refresh_token_is_honoured_once_within_the_grace_from_the_same_agent(app: TestApp) {
    let backend = match app.ctx.db.get_database_backend() {
        sea_orm::DbBackend::Sqlite => Backend::Sqlite,
        _ => Backend::Postgres,
    };
    let app = TestApp::spawn_with(backend, |s| s.auth.refresh_reuse_grace_secs = 30)
        .await
        .unwrap();
    app.ctx.clock.freeze();
    let user = app.user("lost-response").await;

    // The lost response: T1 is spent, T2 never reached the client; it presents T1 again.
    let pair = sign_in_as(&app, &user.email, AGENT).await;
    let t1 = pair["refresh_token"].as_str().unwrap().to_owned();
    let (status, lost) = refresh_as(&app, &t1, AGENT).await;
    assert_eq!(status, StatusCode::OK);
    app.ctx.clock.advance(chrono::Duration::seconds(20));
    let (status, again) = refresh_as(&app, &t1, AGENT).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["session_id"], pair["session_id"], "the same session");
    assert_ne!(again["refresh_token"], lost["refresh_token"]);
    // Both successors live on (two tabs each keep going), each single use as always.
    for token in [&again["refresh_token"], &lost["refresh_token"]] {
        let (status, _) = refresh_as(&app, token.as_str().unwrap(), AGENT).await;
        assert_eq!(status, StatusCode::OK);
    }
    // A third presentation of T1 is reuse even within the grace: the session ends.
    let (status, body) = refresh_as(&app, &t1, AGENT).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("refresh_token_reused"))
    );
    let session = app
        .session(pair["session_id"].as_str().unwrap().parse().unwrap())
        .await;
    assert!(session.revoked_at.is_some());

    // Another user agent within the grace: reuse.
    let pair = sign_in_as(&app, &user.email, AGENT).await;
    let t1 = pair["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(refresh_as(&app, &t1, AGENT).await.0, StatusCode::OK);
    let (status, body) = refresh_as(&app, &t1, "some other agent").await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("refresh_token_reused"))
    );

    // The same user agent after the grace: reuse.
    let pair = sign_in_as(&app, &user.email, AGENT).await;
    let t1 = pair["refresh_token"].as_str().unwrap().to_owned();
    assert_eq!(refresh_as(&app, &t1, AGENT).await.0, StatusCode::OK);
    app.ctx.clock.advance(chrono::Duration::seconds(31));
    let (status, body) = refresh_as(&app, &t1, AGENT).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (StatusCode::UNAUTHORIZED, Some("refresh_token_reused"))
    );
}
