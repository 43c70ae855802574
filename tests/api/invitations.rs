//! Invitations: created only by those who may grant the role there, delivered only by mail,
//! accepted once by the addressee, re-checked against the inviter's rights at acceptance.

use futures_util::future::join_all;
use reqwest::{Response, StatusCode};
use sea_orm::sea_query::Expr;
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{assert_problem, TestApp, TestUser, PASSWORD};

both_backends!(
    invite_mail_accept_and_membership,
    acceptance_is_refused_for_the_wrong_user_or_a_dead_invitation,
    nobody_invites_with_more_than_they_hold,
    invitation_input_is_validated,
    acceptance_rechecks_the_inviter,
    concurrent_accepts_of_one_invitation_make_one_membership,
    revoking_and_listing_invitations,
    mail_outbox_command_prints_newest_first_as_json_lines,
    an_organization_with_the_longest_name_still_invites,
);

pub fn role(name: &str) -> Uuid {
    migration::builtin_role_id(name)
}

/// `POST /v1/orgs/{org}/invitations` as `inviter`.
pub async fn invite(
    app: &TestApp,
    inviter: &TestUser,
    org: Uuid,
    email: &str,
    role_name: &str,
    scope: Option<Value>,
) -> Response {
    let mut body = json!({ "email": email, "role_id": role(role_name) });
    if let Some(scope) = scope {
        body["scope"] = scope;
    }
    app.post_authed(
        &format!("/v1/orgs/{org}/invitations"),
        &inviter.access_token,
        &body,
    )
    .await
}

/// The token in the newest invitation mailed to `email`.
pub async fn mailed_token(app: &TestApp, email: &str) -> String {
    let mail = service::mail::Mailer::outbox(&app.ctx.db, Some(email), 1)
        .await
        .expect("outbox");
    let body = &mail.first().expect("a message to the invitee").body;
    let start = body.find("token=").expect("link in the mail") + "token=".len();
    body[start..]
        .split_whitespace()
        .next()
        .expect("token")
        .to_owned()
}

pub async fn accept(app: &TestApp, user: &TestUser, token: &str) -> Response {
    app.post_authed(
        "/v1/invitations/accept",
        &user.access_token,
        &json!({ "token": token }),
    )
    .await
}

/// A new user who joined `org` through an invitation from `inviter` with `role_name` at
/// `scope` (the organization when `None`).
pub async fn join(
    app: &TestApp,
    inviter: &TestUser,
    org: Uuid,
    name: &str,
    role_name: &str,
    scope: Option<Value>,
) -> TestUser {
    let user = app.user(name).await;
    let res = invite(app, inviter, org, &user.email, role_name, scope).await;
    assert_eq!(
        res.status(),
        StatusCode::CREATED,
        "{}",
        res.text().await.unwrap_or_default()
    );
    let token = mailed_token(app, &user.email).await;
    let res = accept(app, &user, &token).await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "{}",
        res.text().await.unwrap_or_default()
    );
    user
}

/// Registers and signs in a user with exactly this address (any case).
async fn user_with_email(app: &TestApp, email: &str, name: &str) -> TestUser {
    let res = app.register(email, PASSWORD, name).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    let partial = TestUser {
        id: body["id"].as_str().unwrap().parse().unwrap(),
        email: email.to_owned(),
        password: PASSWORD.to_owned(),
        access_token: String::new(),
        refresh_token: String::new(),
        session_id: Uuid::nil(),
    };
    app.sign_in(&partial).await
}

pub async fn grant_rows(app: &TestApp, org: Uuid, user_id: Uuid) -> u64 {
    let Some(m) = entity::memberships::Entity::find()
        .filter(entity::memberships::Column::OrganizationId.eq(org))
        .filter(entity::memberships::Column::UserId.eq(user_id))
        .one(&app.ctx.db)
        .await
        .unwrap()
    else {
        return 0;
    };
    entity::role_assignments::Entity::find()
        .filter(entity::role_assignments::Column::MembershipId.eq(m.id))
        .count(&app.ctx.db)
        .await
        .unwrap()
}

async fn json_of(res: Response) -> Value {
    res.json().await.expect("json")
}

async fn invite_ok(app: &TestApp, inviter: &TestUser, org: Uuid, email: &str) -> Value {
    let res = invite(app, inviter, org, email, "member", None).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    json_of(res).await
}

async fn invite_mail_accept_and_membership(app: TestApp) {
    let owner = app.user("owner").await;
    let org = app.create_org(&owner, "acme").await;
    let tag = Uuid::new_v4().simple().to_string();
    let email = format!("bob-{tag}@example.com");

    let res = invite(&app, &owner, org, &email, "member", None).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let text = res.text().await.unwrap();
    let created: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(created["email"], email.as_str());
    assert_eq!(created["status"], "pending");
    assert_eq!(created["role_id"], role("member").to_string());
    assert_eq!(
        created["scope"],
        json!({"type": "organization", "id": org.to_string()})
    );
    assert_eq!(created["invited_by"], owner.id.to_string());
    assert!(created.get("token").is_none() && created.get("token_hash").is_none());

    // Exactly one mail, to bob, with a link under the configured public URL; the token in it
    // appears in no response and is stored only hashed.
    let mail = service::mail::Mailer::outbox(&app.ctx.db, Some(&email), 10)
        .await
        .unwrap();
    assert_eq!(mail.len(), 1);
    assert_eq!(mail[0].kind, "invitation");
    assert!(mail[0].subject.contains("acme"), "{}", mail[0].subject);
    let link_prefix = format!("{}/invitations/accept?token=", app.ctx.public_url());
    assert!(
        link_prefix.starts_with("http://127.0.0.1:"),
        "{link_prefix}"
    );
    assert!(mail[0].body.contains(&link_prefix), "{}", mail[0].body);
    let token = mailed_token(&app, &email).await;
    assert!(token.len() >= 43, "{token}");
    assert!(!text.contains(&token));
    let row = entity::invitations::Entity::find()
        .one(&app.ctx.db)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(row.token_hash.len(), 64);
    assert_ne!(row.token_hash, token);
    let listed = app
        .get_authed(&format!("/v1/orgs/{org}/invitations"), &owner.access_token)
        .await
        .text()
        .await
        .unwrap();
    assert!(!listed.contains(&token) && !listed.contains(&row.token_hash));

    // Bob registered with the address in another case.
    let bob = user_with_email(&app, &format!("Bob-{tag}@EXAMPLE.com"), "Bob").await;
    assert_eq!(app.me(&bob.access_token).await["email_verified"], false);
    let res = accept(&app, &bob, &token).await;
    assert_eq!(res.status(), StatusCode::OK);
    let accepted = json_of(res).await;
    assert_eq!(accepted["organization_id"], org.to_string());
    assert_eq!(accepted["membership"]["user_id"], bob.id.to_string());
    assert_eq!(accepted["membership"]["new_member"], true);
    assert_eq!(accepted["assignment"]["role_name"], "member");
    assert_eq!(accepted["assignment"]["scope"]["type"], "organization");

    let members = json_of(
        app.get_authed(&format!("/v1/orgs/{org}/members"), &owner.access_token)
            .await,
    )
    .await;
    let items = members["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let entry = items
        .iter()
        .find(|m| m["user_id"] == bob.id.to_string())
        .expect("bob is listed");
    assert_eq!(entry["email"], email.as_str());
    assert_eq!(entry["display_name"], "Bob");
    assert_eq!(entry["roles"].as_array().unwrap().len(), 1);
    assert_eq!(entry["roles"][0]["role_name"], "member");
    assert_eq!(
        entry["roles"][0]["assignment_id"],
        accepted["assignment"]["assignment_id"]
    );
    // Bob is in: he reads the organization and its members.
    let res = app
        .get_authed(&format!("/v1/orgs/{org}/members"), &bob.access_token)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(app.me(&bob.access_token).await["email_verified"], true);

    let listed = json_of(
        app.get_authed(
            &format!("/v1/orgs/{org}/invitations?status=accepted"),
            &owner.access_token,
        )
        .await,
    )
    .await;
    assert_eq!(listed["items"][0]["status"], "accepted");
    let actions = app.audit_actions(bob.id).await;
    assert!(
        actions.iter().any(|a| a == "invitation.accepted"),
        "{actions:?}"
    );
    let actions = app.audit_actions(owner.id).await;
    assert!(
        actions.iter().any(|a| a == "invitation.created"),
        "{actions:?}"
    );
}

async fn acceptance_is_refused_for_the_wrong_user_or_a_dead_invitation(app: TestApp) {
    let owner = app.user("owner").await;
    let org = app.create_org(&owner, "acme").await;
    let bob = app.user("bob").await;
    let stranger = app.user("stranger").await;

    invite_ok(&app, &owner, org, &bob.email).await;
    let token = mailed_token(&app, &bob.email).await;
    let res = accept(&app, &stranger, &token).await;
    assert_problem(res, StatusCode::FORBIDDEN, "invitation_email_mismatch").await;
    assert_eq!(accept(&app, &bob, &token).await.status(), StatusCode::OK);
    let res = accept(&app, &bob, &token).await;
    assert_problem(res, StatusCode::CONFLICT, "invitation_used").await;

    // Revoked.
    let carol = app.user("carol").await;
    let inv = invite_ok(&app, &owner, org, &carol.email).await;
    let token = mailed_token(&app, &carol.email).await;
    let res = app
        .delete_authed(
            &format!("/v1/orgs/{org}/invitations/{}", inv["id"].as_str().unwrap()),
            &owner.access_token,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = accept(&app, &carol, &token).await;
    assert_problem(res, StatusCode::CONFLICT, "invitation_revoked").await;

    // Expired.
    let dave = app.user("dave").await;
    let inv = invite_ok(&app, &owner, org, &dave.email).await;
    let token = mailed_token(&app, &dave.email).await;
    let id: Uuid = inv["id"].as_str().unwrap().parse().unwrap();
    entity::invitations::Entity::update_many()
        .col_expr(
            entity::invitations::Column::ExpiresAt,
            Expr::value(chrono::Utc::now() - chrono::Duration::minutes(1)),
        )
        .filter(entity::invitations::Column::Id.eq(id))
        .exec(&app.ctx.db)
        .await
        .unwrap();
    let res = accept(&app, &dave, &token).await;
    assert_problem(res, StatusCode::CONFLICT, "invitation_expired").await;

    for (token, status, code) in [
        ("garbage", StatusCode::NOT_FOUND, "not_found"),
        ("", StatusCode::UNPROCESSABLE_ENTITY, "validation_failed"),
    ] {
        let res = accept(&app, &dave, token).await;
        assert_problem(res, status, code).await;
    }
    let res = app
        .post_json("/v1/invitations/accept", &json!({ "token": "x" }))
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    // None of the refused made anyone a member.
    for user in [&stranger, &carol, &dave] {
        assert_eq!(grant_rows(&app, org, user.id).await, 0);
        let res = app
            .get_authed(&format!("/v1/orgs/{org}"), &user.access_token)
            .await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND);
    }
}

async fn nobody_invites_with_more_than_they_hold(app: TestApp) {
    let owner = app.user("owner").await;
    let org = app.create_org(&owner, "acme").await;
    let acct_a = app.create_account(&owner, org, "a").await;
    let acct_b = app.create_account(&owner, org, "b").await;
    let member = join(&app, &owner, org, "member", "member", None).await;
    let admin = join(&app, &owner, org, "admin", "admin", None).await;
    let acct_admin = join(
        &app,
        &owner,
        org,
        "acct-admin",
        "admin",
        Some(json!({"type": "account", "id": acct_a})),
    )
    .await;
    let at = |id: Uuid| Some(json!({"type": "account", "id": id}));

    let cases = [
        (
            "member lacks member:invite",
            &member,
            "viewer",
            None,
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "admin cannot hand out owner",
            &admin,
            "owner",
            None,
            StatusCode::FORBIDDEN,
            "escalation_denied",
        ),
        (
            "account admin at the organization",
            &acct_admin,
            "member",
            None,
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "account admin at an account they cannot read",
            &acct_admin,
            "member",
            at(acct_b),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            "account admin cannot hand out owner at their account",
            &acct_admin,
            "owner",
            at(acct_a),
            StatusCode::FORBIDDEN,
            "escalation_denied",
        ),
    ];
    for (what, who, role_name, scope, status, code) in cases {
        let email = format!("x-{}@example.com", Uuid::new_v4().simple());
        let res = invite(&app, who, org, &email, role_name, scope).await;
        assert_eq!(res.status(), status, "{what}");
        assert_problem(res, status, code).await;
    }
    let allowed: Vec<(&TestUser, &str, Option<Value>)> = vec![
        (&acct_admin, "member", at(acct_a)),
        (&acct_admin, "admin", at(acct_a)),
        (&admin, "admin", None),
        (&owner, "owner", None),
    ];
    for (who, role_name, scope) in allowed {
        let email = format!("y-{}@example.com", Uuid::new_v4().simple());
        let res = invite(&app, who, org, &email, role_name, scope).await;
        assert_eq!(res.status(), StatusCode::CREATED, "{role_name}");
    }
    // Nothing refused was mailed.
    let sent = service::mail::Mailer::outbox(&app.ctx.db, None, 1000)
        .await
        .unwrap();
    assert!(sent.iter().all(|m| !m.recipient.starts_with("x-")));
}

async fn invitation_input_is_validated(app: TestApp) {
    let owner = app.user("owner").await;
    let org = app.create_org(&owner, "acme").await;
    let other_owner = app.user("other").await;
    let other = app.create_org(&other_owner, "other").await;
    let other_acct = app.create_account(&other_owner, other, "theirs").await;
    let path = format!("/v1/orgs/{org}/invitations");
    let ok_email = "new@example.com";
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({"email": "not an email", "role_id": role("member")}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"email": ok_email, "role_id": role("member"), "expires_in": 59}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"email": ok_email, "role_id": role("member"), "expires_in": 2_592_001}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"email": ok_email, "role_id": Uuid::now_v7()}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"email": ok_email, "role_id": role("member"),
                   "scope": {"type": "account", "id": other_acct}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"email": ok_email, "role_id": role("member"),
                   "scope": {"type": "organization", "id": other}}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            json!({"email": owner.email.to_uppercase(), "role_id": role("member")}),
            StatusCode::CONFLICT,
            "already_member",
        ),
        (
            json!({"email": ok_email, "role_id": role("member"), "token": "mine"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
        ),
    ];
    for (body, status, code) in cases {
        let res = app.post_authed(&path, &owner.access_token, &body).await;
        assert_problem(res, status, code).await;
    }
    let res = app
        .post_authed(
            &path,
            &owner.access_token,
            &json!({"email": ok_email, "role_id": role("member"), "expires_in": 60}),
        )
        .await;
    let body = json_of(res).await;
    let created: chrono::DateTime<chrono::Utc> =
        body["created_at"].as_str().unwrap().parse().unwrap();
    let expires: chrono::DateTime<chrono::Utc> =
        body["expires_at"].as_str().unwrap().parse().unwrap();
    assert_eq!((expires - created).num_seconds(), 60);
    // One invitation mailed (besides the owner's email verification from registering).
    let invitations = service::mail::Mailer::outbox(&app.ctx.db, None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.kind == "invitation")
        .count();
    assert_eq!(invitations, 1);
}

async fn acceptance_rechecks_the_inviter(app: TestApp) {
    use sea_orm::sea_query::ExprTrait;
    let owner = app.user("owner").await;
    let org = app.create_org(&owner, "acme").await;

    // The inviter is removed before the invitee accepts.
    let admin = join(&app, &owner, org, "admin", "admin", None).await;
    let carol = app.user("carol").await;
    assert_eq!(
        invite(&app, &admin, org, &carol.email, "member", None)
            .await
            .status(),
        StatusCode::CREATED
    );
    let token = mailed_token(&app, &carol.email).await;
    let res = app
        .delete_authed(
            &format!("/v1/orgs/{org}/members/{}", admin.id),
            &owner.access_token,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = accept(&app, &carol, &token).await;
    assert_problem(res, StatusCode::CONFLICT, "inviter_lacks_rights").await;
    assert_eq!(grant_rows(&app, org, carol.id).await, 0);

    // The inviter stays a member but loses the role that let them invite (changed straight in
    // the database, as the role-assignment endpoints would, bumping the authz version).
    let admin2 = join(&app, &owner, org, "admin2", "admin", None).await;
    let dave = app.user("dave").await;
    assert_eq!(
        invite(&app, &admin2, org, &dave.email, "member", None)
            .await
            .status(),
        StatusCode::CREATED
    );
    let token = mailed_token(&app, &dave.email).await;
    let membership = entity::memberships::Entity::find()
        .filter(entity::memberships::Column::UserId.eq(admin2.id))
        .one(&app.ctx.db)
        .await
        .unwrap()
        .unwrap();
    entity::role_assignments::Entity::update_many()
        .col_expr(
            entity::role_assignments::Column::RoleId,
            Expr::value(role("viewer")),
        )
        .filter(entity::role_assignments::Column::MembershipId.eq(membership.id))
        .exec(&app.ctx.db)
        .await
        .unwrap();
    entity::organizations::Entity::update_many()
        .col_expr(
            entity::organizations::Column::AuthzVersion,
            Expr::col(entity::organizations::Column::AuthzVersion).add(1),
        )
        .filter(entity::organizations::Column::Id.eq(org))
        .exec(&app.ctx.db)
        .await
        .unwrap();
    let res = accept(&app, &dave, &token).await;
    assert_problem(res, StatusCode::CONFLICT, "inviter_lacks_rights").await;
    // The refusal left the invitation usable should the inviter regain the right.
    entity::role_assignments::Entity::update_many()
        .col_expr(
            entity::role_assignments::Column::RoleId,
            Expr::value(role("admin")),
        )
        .filter(entity::role_assignments::Column::MembershipId.eq(membership.id))
        .exec(&app.ctx.db)
        .await
        .unwrap();
    entity::organizations::Entity::update_many()
        .col_expr(
            entity::organizations::Column::AuthzVersion,
            Expr::col(entity::organizations::Column::AuthzVersion).add(1),
        )
        .filter(entity::organizations::Column::Id.eq(org))
        .exec(&app.ctx.db)
        .await
        .unwrap();
    assert_eq!(accept(&app, &dave, &token).await.status(), StatusCode::OK);
}

async fn concurrent_accepts_of_one_invitation_make_one_membership(app: TestApp) {
    let owner = app.user("owner").await;
    let org = app.create_org(&owner, "acme").await;
    let bob = app.user("bob").await;
    invite_ok(&app, &owner, org, &bob.email).await;
    let token = mailed_token(&app, &bob.email).await;

    let results = join_all((0..50).map(|_| accept(&app, &bob, &token))).await;
    let mut ok = 0;
    let mut used = 0;
    for res in results {
        match res.status() {
            StatusCode::OK => ok += 1,
            StatusCode::CONFLICT => {
                assert_problem(res, StatusCode::CONFLICT, "invitation_used").await;
                used += 1;
            }
            other => panic!("unexpected {other}: {}", res.text().await.unwrap()),
        }
    }
    assert_eq!((ok, used), (1, 49));
    let memberships = entity::memberships::Entity::find()
        .filter(entity::memberships::Column::OrganizationId.eq(org))
        .filter(entity::memberships::Column::UserId.eq(bob.id))
        .count(&app.ctx.db)
        .await
        .unwrap();
    assert_eq!(memberships, 1);
    assert_eq!(grant_rows(&app, org, bob.id).await, 1);
}

async fn revoking_and_listing_invitations(app: TestApp) {
    let owner = app.user("owner").await;
    let org = app.create_org(&owner, "acme").await;
    let other_owner = app.user("other").await;
    let other = app.create_org(&other_owner, "other").await;
    let theirs = invite_ok(&app, &other_owner, other, "z@example.com").await;
    let viewer = join(&app, &owner, org, "viewer", "viewer", None).await;

    let first = invite_ok(&app, &owner, org, "p1@example.com").await;
    let second = invite_ok(&app, &owner, org, "p2@example.com").await;
    let path = |id: &Value| format!("/v1/orgs/{org}/invitations/{}", id.as_str().unwrap());

    // A viewer reads the list but may not revoke.
    let res = app
        .delete_authed(&path(&first["id"]), &viewer.access_token)
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = app
        .delete_authed(&path(&first["id"]), &owner.access_token)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app
        .delete_authed(&path(&first["id"]), &owner.access_token)
        .await;
    assert_problem(res, StatusCode::CONFLICT, "invitation_not_pending").await;
    // Another organization's invitation does not exist here.
    let res = app
        .delete_authed(&path(&theirs["id"]), &owner.access_token)
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = app
        .delete_authed(&path(&json!(Uuid::now_v7())), &owner.access_token)
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;

    let list = |q: &'static str| {
        let app = &app;
        let token = viewer.access_token.clone();
        async move {
            let res = app
                .get_authed(&format!("/v1/orgs/{org}/invitations{q}"), &token)
                .await;
            assert_eq!(res.status(), StatusCode::OK);
            json_of(res).await
        }
    };
    let ids = |page: &Value| -> Vec<Value> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].clone())
            .collect()
    };
    // The viewer's own (accepted) invitation, then the two.
    let all = list("").await;
    assert_eq!(all["items"].as_array().unwrap().len(), 3);
    assert_eq!(
        ids(&list("?status=revoked").await),
        vec![first["id"].clone()]
    );
    assert_eq!(
        ids(&list("?status=pending").await),
        vec![second["id"].clone()]
    );
    assert_eq!(
        list("?status=accepted").await["items"][0]["email"],
        viewer.email.as_str()
    );
    assert_eq!(list("?status=expired").await["items"], json!([]));
    let page = list("?limit=2").await;
    let cursor = page["next_cursor"].as_str().unwrap().to_owned();
    let rest = app
        .get_authed(
            &format!("/v1/orgs/{org}/invitations?limit=2&cursor={cursor}"),
            &viewer.access_token,
        )
        .await;
    let rest = json_of(rest).await;
    assert_eq!(ids(&rest), vec![second["id"].clone()]);
    assert!(rest["next_cursor"].is_null());
    let res = app
        .get_authed(
            &format!("/v1/orgs/{org}/invitations?status=bogus"),
            &viewer.access_token,
        )
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let actions = app.audit_actions(owner.id).await;
    assert!(
        actions.iter().any(|a| a == "invitation.revoked"),
        "{actions:?}"
    );
}

async fn mail_outbox_command_prints_newest_first_as_json_lines(app: TestApp) {
    let owner = app.user("owner").await;
    let org = app.create_org(&owner, "acme").await;
    for email in [
        "first@example.com",
        "second@example.com",
        "third@example.com",
    ] {
        invite_ok(&app, &owner, org, email).await;
    }
    let lines = service::mail::outbox_lines(&app.ctx.db, None, 100)
        .await
        .unwrap();
    let parsed: Vec<Value> = lines
        .iter()
        .map(|l| {
            assert!(!l.contains('\n'), "one object a line: {l}");
            serde_json::from_str::<Value>(l).unwrap()
        })
        // The owner's email verification from registering is older than the invitations.
        .filter(|m| m["kind"] != "email_verification")
        .collect();
    let to: Vec<&str> = parsed.iter().map(|m| m["to"].as_str().unwrap()).collect();
    assert_eq!(
        to,
        [
            "third@example.com",
            "second@example.com",
            "first@example.com"
        ]
    );
    for m in &parsed {
        let keys: Vec<&str> = m.as_object().unwrap().keys().map(String::as_str).collect();
        for key in ["id", "to", "kind", "subject", "body", "created_at"] {
            assert!(keys.contains(&key), "{key} missing in {m}");
        }
        assert_eq!(m["kind"], "invitation");
    }
    let only = service::mail::outbox_lines(&app.ctx.db, Some("SECOND@example.com"), 100)
        .await
        .unwrap();
    assert_eq!(only.len(), 1);
    assert!(only[0].contains("second@example.com"));
    let limited = service::mail::outbox_lines(&app.ctx.db, None, 2)
        .await
        .unwrap();
    assert_eq!(limited.len(), 2);
}

/// The invitation's subject names the organization: a name of the longest allowed length (200
/// characters, here multi-byte) is shortened there, not refused by the outbox's column (found by
/// Schemathesis on PostgreSQL as a 500).
async fn an_organization_with_the_longest_name_still_invites(app: TestApp) {
    let owner = app.user("owner").await;
    let name = "Ω".repeat(200);
    let org = app
        .create(
            &owner,
            "/v1/orgs",
            &json!({ "name": name, "slug": "long-name" }),
        )
        .await;
    let org: Uuid = org["id"].as_str().expect("id").parse().expect("uuid");
    let email = format!("{}@example.com", Uuid::new_v4().simple());
    invite_ok(&app, &owner, org, &email).await;
    let mail = service::mail::Mailer::outbox(&app.ctx.db, Some(&email), 10)
        .await
        .unwrap();
    let subject = &mail[0].subject;
    assert!(
        subject.starts_with("You are invited to join ΩΩΩ") && subject.contains("…"),
        "{subject}"
    );
    assert!(subject.chars().count() <= 200, "{subject}");
    assert!(mail[0].body.contains(&name), "the body names it whole");
}
