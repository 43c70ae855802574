//! TOTP second factors: enroll, confirm (recovery codes), sign in with a challenge and a code,
//! disable; a code is accepted once, challenges expire by the server's clock (moved forward
//! here) and survive wrong codes within the account's budget; secrets are encrypted at rest
//! with keys that rotate.

use chrono::Duration;
use futures_util::future::join_all;
use reqwest::StatusCode;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
use serde_json::{json, Value};

use crate::both_backends;
use crate::helpers::{assert_problem, TestApp, TestUser};

both_backends!(
    enroll_confirm_sign_in_with_a_code_and_disable,
    a_code_is_accepted_once_by_100_concurrent_sign_ins,
    challenges_expire_and_survive_wrong_codes,
    wrong_codes_spend_the_account_budget,
    secrets_are_encrypted_and_their_key_rotates,
    an_organization_can_require_mfa_of_its_members,
);

/// The code the app shows for `secret` at the server's time, `steps` × 30 s from now.
fn code_at(app: &TestApp, secret: &str, steps: i64) -> String {
    let bytes = totp_rs::Secret::try_from_base32(secret).expect("base32 secret");
    let totp = totp_rs::Builder::new()
        .with_secret(bytes)
        .with_account_name("test")
        .build()
        .expect("totp");
    let now = app.ctx.clock.now() + Duration::seconds(30 * steps);
    totp.generate(u64::try_from(now.timestamp()).expect("after 1970"))
        .to_string()
}

async fn json(res: reqwest::Response) -> (StatusCode, Value) {
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Enrolls and confirms TOTP for `user`; the secret and the recovery codes.
async fn enable_mfa(app: &TestApp, user: &TestUser) -> (String, Vec<String>) {
    let (status, body) = json(
        app.post_authed("/v1/me/mfa/totp", &user.access_token, &json!({}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let secret = body["secret"].as_str().expect("secret").to_owned();
    let (status, body) = json(
        app.post_authed(
            "/v1/me/mfa/totp/confirm",
            &user.access_token,
            &json!({ "code": code_at(app, &secret, 0) }),
        )
        .await,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let codes = body["recovery_codes"]
        .as_array()
        .expect("recovery codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_owned())
        .collect();
    // The confirming code's step is spent: later codes come from the next one.
    app.ctx.clock.advance(Duration::seconds(30));
    (secret, codes)
}

/// Signs in with the password; the challenge of the `mfa_required` answer.
async fn challenge(app: &TestApp, user: &TestUser) -> String {
    let (status, body) = json(app.login(&user.email, &user.password).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["mfa_required"], true, "{body}");
    assert!(
        body.get("access_token").is_none(),
        "no session before the code"
    );
    body["challenge"].as_str().expect("challenge").to_owned()
}

async fn verify(app: &TestApp, challenge: &str, code: &str) -> reqwest::Response {
    app.post_json(
        "/v1/auth/mfa/verify",
        &json!({ "challenge": challenge, "code": code }),
    )
    .await
}

async fn enroll_confirm_sign_in_with_a_code_and_disable(app: TestApp) {
    let user = app.user("mia").await;
    let (status, body) = json(
        app.post_authed("/v1/me/mfa/totp", &user.access_token, &json!({}))
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    let secret = body["secret"].as_str().expect("secret").to_owned();
    let uri = body["otpauth_uri"].as_str().expect("uri");
    assert!(uri.starts_with("otpauth://totp/Tessera:"), "{uri}");
    assert!(uri.contains(&format!("secret={secret}")), "{uri}");
    assert!(uri.contains("issuer=Tessera"), "{uri}");
    assert_eq!(app.me(&user.access_token).await["mfa_enabled"], false);

    let wrong = if code_at(&app, &secret, 0) == "000000" {
        "111111"
    } else {
        "000000"
    };
    let confirm = |code: String| {
        let token = user.access_token.clone();
        let app = &app;
        async move {
            app.post_authed("/v1/me/mfa/totp/confirm", &token, &json!({ "code": code }))
                .await
        }
    };
    assert_problem(
        confirm(wrong.into()).await,
        StatusCode::FORBIDDEN,
        "invalid_mfa_code",
    )
    .await;
    assert_problem(
        confirm("12345".into()).await,
        StatusCode::UNPROCESSABLE_ENTITY,
        "validation_failed",
    )
    .await;
    let (status, body) = json(confirm(code_at(&app, &secret, 0)).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let codes: Vec<&str> = body["recovery_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code"))
        .collect();
    assert_eq!(codes.len(), 10);
    let distinct: std::collections::HashSet<_> = codes.iter().collect();
    assert_eq!(distinct.len(), 10);
    assert_eq!(app.me(&user.access_token).await["mfa_enabled"], true);
    assert_problem(
        app.post_authed("/v1/me/mfa/totp", &user.access_token, &json!({}))
            .await,
        StatusCode::CONFLICT,
        "mfa_already_enabled",
    )
    .await;
    // The confirming code is spent (no replay within its window).
    let challenge_token = challenge(&app, &user).await;
    assert_problem(
        verify(&app, &challenge_token, &code_at(&app, &secret, 0)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_code",
    )
    .await;
    // The same challenge, a fresh code: a session (with a second factor).
    app.ctx.clock.advance(Duration::seconds(30));
    let (status, body) =
        json(verify(&app, &challenge_token, &code_at(&app, &secret, 0)).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access = body["access_token"].as_str().expect("access");
    assert_eq!(app.me(access).await["id"], user.id.to_string());
    let sid: uuid::Uuid = body["session_id"]
        .as_str()
        .expect("sid")
        .parse()
        .expect("uuid");
    assert_eq!(app.session(sid).await.mfa_level, 1);
    assert_problem(
        verify(&app, &challenge_token, &code_at(&app, &secret, 1)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_challenge",
    )
    .await;

    // A recovery code signs in once.
    let challenge_token = challenge(&app, &user).await;
    assert_eq!(
        verify(&app, &challenge_token, codes[0]).await.status(),
        StatusCode::OK
    );
    let challenge_token = challenge(&app, &user).await;
    assert_problem(
        verify(&app, &challenge_token, codes[0]).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_code",
    )
    .await;

    // Disabling takes a code: a wrong one is refused, a recovery code works.
    let disable = |code: &str| {
        let body = json!({ "code": code });
        let token = user.access_token.clone();
        let app = &app;
        async move {
            app.call(
                reqwest::Method::DELETE,
                "/v1/me/mfa/totp",
                &token,
                Some(&body),
            )
            .await
        }
    };
    assert_problem(
        disable(codes[0]).await,
        StatusCode::FORBIDDEN,
        "invalid_mfa_code",
    )
    .await;
    assert_eq!(
        disable(&codes[1].to_uppercase()).await.status(),
        StatusCode::NO_CONTENT
    );
    assert_eq!(app.me(&user.access_token).await["mfa_enabled"], false);
    assert_problem(
        disable(codes[2]).await,
        StatusCode::CONFLICT,
        "mfa_not_enabled",
    )
    .await;
    let (status, body) = json(app.login(&user.email, &user.password).await).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body["access_token"].is_string(),
        "a password alone signs in again"
    );
    let actions = app.audit_actions(user.id).await;
    for action in [
        "user.mfa_enabled",
        "user.mfa_disabled",
        "auth.mfa_code_rejected",
    ] {
        assert!(actions.iter().any(|a| a == action), "{action}: {actions:?}");
    }
}

async fn a_code_is_accepted_once_by_100_concurrent_sign_ins(owner: TestApp) {
    // A second server on the test's database with an account budget that 99 wrong answers do
    // not reach, so every refusal here is the replay check's.
    let url = owner.ctx.settings.database.url.clone();
    let app = TestApp::spawn_with_database(&url, |s| {
        s.limits.free_failures = 1_000;
        s.limits.failure_budget = 1_000;
    })
    .await;
    // Time stands still (the account's counters are judged in whole seconds, and a check that
    // started in one second must not meet a failure recorded in the next).
    app.ctx.clock.freeze();
    let user = app.user("centum").await;
    let (secret, _) = enable_mfa(&app, &user).await;
    let mut challenges = Vec::new();
    for _ in 0..100 {
        challenges.push(challenge(&app, &user).await);
    }
    let code = code_at(&app, &secret, 0);
    let answers = join_all(challenges.iter().map(|c| verify(&app, c, &code))).await;
    let mut ok = 0;
    for res in answers {
        if res.status() == StatusCode::OK {
            ok += 1;
        } else {
            assert_problem(res, StatusCode::UNAUTHORIZED, "invalid_mfa_code").await;
        }
    }
    assert_eq!(ok, 1, "one code, one sign-in");
}

async fn challenges_expire_and_survive_wrong_codes(app: TestApp) {
    let user = app.user("exp").await;
    let (secret, codes) = enable_mfa(&app, &user).await;
    let c = challenge(&app, &user).await;
    let wrong = if code_at(&app, &secret, 0) == "000000" {
        "111111"
    } else {
        "000000"
    };
    assert_problem(
        verify(&app, &c, wrong).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_code",
    )
    .await;
    assert_problem(
        verify(&app, "no-such-challenge", &codes[0]).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_challenge",
    )
    .await;
    // 5 minutes (`mfa.challenge_ttl_secs`) later it is gone, even with a right code.
    let ttl = app.ctx.settings.mfa.challenge_ttl_secs;
    app.ctx.clock.advance(Duration::seconds(ttl + 1));
    assert_problem(
        verify(&app, &c, &code_at(&app, &secret, 0)).await,
        StatusCode::UNAUTHORIZED,
        "invalid_mfa_challenge",
    )
    .await;
    // A fresh challenge just before its end works.
    let c = challenge(&app, &user).await;
    app.ctx.clock.advance(Duration::seconds(ttl - 10));
    assert_eq!(
        verify(&app, &c, &code_at(&app, &secret, 0)).await.status(),
        StatusCode::OK
    );
}

async fn wrong_codes_spend_the_account_budget(owner: TestApp) {
    let url = owner.ctx.settings.database.url.clone();
    let app = TestApp::spawn_with_database(&url, |s| {
        s.limits.free_failures = 1_000;
        s.limits.failure_budget = 3;
    })
    .await;
    app.ctx.clock.freeze();
    let user = app.user("budget").await;
    let (secret, _) = enable_mfa(&app, &user).await;
    let c = challenge(&app, &user).await;
    let wrong = if code_at(&app, &secret, 0) == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..3 {
        assert_problem(
            verify(&app, &c, wrong).await,
            StatusCode::UNAUTHORIZED,
            "invalid_mfa_code",
        )
        .await;
    }
    // The budget is spent: even the right code waits (429), and disabling counts too.
    let res = verify(&app, &c, &code_at(&app, &secret, 0)).await;
    assert!(res.headers().contains_key("retry-after"));
    assert_problem(res, StatusCode::TOO_MANY_REQUESTS, "rate_limited").await;
    assert_problem(
        app.call(
            reqwest::Method::DELETE,
            "/v1/me/mfa/totp",
            &user.access_token,
            Some(&json!({ "code": code_at(&app, &secret, 0) })),
        )
        .await,
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
    )
    .await;
}

async fn secrets_are_encrypted_and_their_key_rotates(owner: TestApp) {
    use base64::Engine;
    let key = |id: &str, byte: u8| {
        let b64 = base64::engine::general_purpose::STANDARD.encode([byte; 32]);
        secrecy::SecretString::from(format!("{id}:{b64}"))
    };
    let url = owner.ctx.settings.database.url.clone();
    let (k1, k2) = (key("k1", 1), key("k2", 2));
    let first = TestApp::spawn_with_database(&url, {
        let k1 = k1.clone();
        move |s| s.mfa.keys = vec![k1]
    })
    .await;
    let user = first.user("rot").await;
    let (secret, _) = enable_mfa(&first, &user).await;
    let row = || async {
        entity::mfa_factors::Entity::find()
            .filter(entity::mfa_factors::Column::UserId.eq(user.id))
            .one(&owner.ctx.db)
            .await
            .expect("query")
            .expect("factor")
    };
    let stored = row().await;
    assert_eq!(stored.key_id, "k1");
    let raw = totp_rs::Secret::try_from_base32(&secret).expect("base32");
    assert!(!stored.secret_ciphertext.contains(&secret));
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(&stored.secret_ciphertext)
        .expect("base64");
    assert!(
        !decoded
            .windows(raw.as_bytes().len())
            .any(|w| w == raw.as_bytes()),
        "the secret is not stored in the clear"
    );

    // Rotation: a new key first, the old one after it; re-encrypt; then the old key can go.
    let both = TestApp::spawn_with_database(&url, {
        let (k1, k2) = (k1.clone(), k2.clone());
        move |s| s.mfa.keys = vec![k2, k1]
    })
    .await;
    let keys = both.ctx.mfa_keys.as_deref().expect("keys");
    let rotated = service::mfa::MfaService::rotate_keys(&both.ctx.db, keys)
        .await
        .expect("rotate");
    assert_eq!(rotated, 1);
    assert_eq!(row().await.key_id, "k2");
    let only_new = TestApp::spawn_with_database(&url, move |s| s.mfa.keys = vec![k2]).await;
    only_new.ctx.clock.advance(Duration::seconds(60));
    let c = challenge(&only_new, &user).await;
    assert_eq!(
        verify(&only_new, &c, &code_at(&only_new, &secret, 0))
            .await
            .status(),
        StatusCode::OK
    );
}

async fn an_organization_can_require_mfa_of_its_members(app: TestApp) {
    let owner = app.user("boss").await;
    let org = app.create_org(&owner, "mfa-only").await;
    let member = crate::invitations::join(&app, &owner, org, "staff", "member", None).await;
    let older_session = app.sign_in(&member).await;
    let outsider = app.user("outsider").await;
    let path = format!("/v1/orgs/{org}");
    let require = |version: i64| {
        let token = owner.access_token.clone();
        let path = path.clone();
        let app = &app;
        async move {
            app.call(
                reqwest::Method::PATCH,
                &path,
                &token,
                Some(&json!({ "require_mfa": true, "version": version })),
            )
            .await
        }
    };
    // Requiring it needs a session signed in with a second factor.
    assert_problem(require(1).await, StatusCode::FORBIDDEN, "mfa_required").await;
    enable_mfa(&app, &owner).await; // confirming marks the current session
    let (status, body) = json(require(1).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["require_mfa"], true);

    // A member without it may do nothing there; an outsider still sees nothing.
    assert_problem(
        app.get_authed(&path, &member.access_token).await,
        StatusCode::FORBIDDEN,
        "mfa_required",
    )
    .await;
    assert_problem(
        app.get_authed(&path, &outsider.access_token).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // Not the organization alone: everything in it, the authorization API included.
    for under in [
        "members",
        "roles",
        "role-assignments",
        "accounts",
        "invitations",
    ] {
        assert_problem(
            app.get_authed(&format!("{path}/{under}"), &member.access_token)
                .await,
            StatusCode::FORBIDDEN,
            "mfa_required",
        )
        .await;
    }
    let question = json!({"org_id": org, "scope": {"type": "organization", "id": org}, "permission": "org:read"});
    assert_problem(
        app.call(
            reqwest::Method::POST,
            "/v1/authz/check",
            &member.access_token,
            Some(&question),
        )
        .await,
        StatusCode::FORBIDDEN,
        "mfa_required",
    )
    .await;
    assert_problem(
        app.get_authed(
            &format!("/v1/authz/permissions?org_id={org}&scope_type=organization&scope_id={org}"),
            &member.access_token,
        )
        .await,
        StatusCode::FORBIDDEN,
        "mfa_required",
    )
    .await;
    let (secret, _) = enable_mfa(&app, &member).await;
    assert_eq!(
        app.get_authed(&path, &member.access_token).await.status(),
        StatusCode::OK
    );
    // A new sign-in counts once its code is accepted.
    let c = challenge(&app, &member).await;
    let (status, body) = json(verify(&app, &c, &code_at(&app, &secret, 0)).await).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access = body["access_token"].as_str().expect("access");
    assert_eq!(app.get_authed(&path, access).await.status(), StatusCode::OK);
    // Another session of the member, opened with the password alone before MFA, does not.
    assert_problem(
        app.get_authed(&path, &older_session.access_token).await,
        StatusCode::FORBIDDEN,
        "mfa_required",
    )
    .await;
}
