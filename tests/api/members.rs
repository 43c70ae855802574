//! Members: listing with their grants, leaving, removal without escalation, the last owner, and
//! outsiders seeing nothing.

use reqwest::{Method, StatusCode};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{assert_problem, TestApp};
use crate::invitations::{grant_rows, invite, join, mailed_token, role};

both_backends!(
    members_are_listed_with_their_roles,
    a_member_leaves_and_their_grants_go_with_them,
    the_last_owner_cannot_leave,
    removal_needs_the_rights_and_no_escalation,
    outsiders_get_404_on_every_member_and_invitation_endpoint,
);

fn members_path(org: Uuid) -> String {
    format!("/v1/orgs/{org}/members")
}

fn member_path(org: Uuid, user: Uuid) -> String {
    format!("/v1/orgs/{org}/members/{user}")
}

async fn all_grant_rows(app: &TestApp, org: Uuid) -> u64 {
    entity::role_assignments::Entity::find()
        .filter(entity::role_assignments::Column::OrganizationId.eq(org))
        .count(&app.ctx.db)
        .await
        .unwrap()
}

async fn members_are_listed_with_their_roles(app: TestApp) {
    let owner = app.user("owner").await;
    let org = app.create_org(&owner, "acme").await;
    let acct = app.create_account(&owner, org, "main").await;
    let proj = app.create_project(&owner, org, acct, "web").await;
    let bob = join(&app, &owner, org, "bob", "viewer", None).await;
    // Invitations are for newcomers; more roles for members come from role assignment.
    let res = invite(
        &app,
        &owner,
        org,
        &bob.email,
        "admin",
        Some(json!({"type": "project", "id": proj})),
    )
    .await;
    assert_problem(res, StatusCode::CONFLICT, "already_member").await;
    let carol = join(
        &app,
        &owner,
        org,
        "carol",
        "member",
        Some(json!({"type": "project", "id": proj})),
    )
    .await;

    let res = app
        .get_authed(&format!("{}?limit=2", members_path(org)), &bob.access_token)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let page: Value = res.json().await.unwrap();
    let items = page["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!(items[0]["user_id"], owner.id.to_string());
    assert_eq!(items[0]["roles"][0]["role_name"], "owner");
    assert_eq!(
        items[0]["roles"][0]["scope"],
        json!({"type": "organization", "id": org.to_string()})
    );
    assert_eq!(items[1]["user_id"], bob.id.to_string());
    assert_eq!(items[1]["roles"][0]["role_id"], role("viewer").to_string());
    let cursor = page["next_cursor"].as_str().unwrap();
    let res = app
        .get_authed(
            &format!("{}?limit=2&cursor={cursor}", members_path(org)),
            &bob.access_token,
        )
        .await;
    let page: Value = res.json().await.unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert!(page["next_cursor"].is_null());
    let entry = &page["items"][0];
    assert_eq!(entry["user_id"], carol.id.to_string());
    assert_eq!(
        entry["roles"],
        json!([{
            "assignment_id": entry["roles"][0]["assignment_id"],
            "role_id": role("member").to_string(),
            "role_name": "member",
            "scope": {"type": "project", "id": proj.to_string()},
        }])
    );
    assert!(entry["joined_at"].is_string());
    assert!(entry["email"].as_str().unwrap().starts_with("carol-"));

    // A project-only member may not list the organization's members.
    let res = app
        .get_authed(&members_path(org), &carol.access_token)
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let res = app
        .get_authed(&format!("{}?limit=0", members_path(org)), &bob.access_token)
        .await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

async fn a_member_leaves_and_their_grants_go_with_them(app: TestApp) {
    let owner = app.user("owner").await;
    let org = app.create_org(&owner, "acme").await;
    let bob = join(&app, &owner, org, "bob", "member", None).await;
    assert_eq!(grant_rows(&app, org, bob.id).await, 1);
    assert_eq!(all_grant_rows(&app, org).await, 2);

    let res = app
        .delete_authed(&member_path(org, bob.id), &bob.access_token)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(grant_rows(&app, org, bob.id).await, 0);
    assert_eq!(all_grant_rows(&app, org).await, 1);
    for path in [format!("/v1/orgs/{org}"), members_path(org)] {
        let res = app.get_authed(&path, &bob.access_token).await;
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    }
    let res = app
        .delete_authed(&member_path(org, bob.id), &bob.access_token)
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let members: Value = app
        .get_authed(&members_path(org), &owner.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(members["items"].as_array().unwrap().len(), 1);
    let actions = app.audit_actions(bob.id).await;
    assert!(actions.iter().any(|a| a == "member.left"), "{actions:?}");

    // Invited again, bob joins afresh.
    let res = invite(&app, &owner, org, &bob.email, "viewer", None).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let token = mailed_token(&app, &bob.email).await;
    let res = crate::invitations::accept(&app, &bob, &token).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(grant_rows(&app, org, bob.id).await, 1);
}

async fn the_last_owner_cannot_leave(app: TestApp) {
    let owner = app.user("owner").await;
    let org = app.create_org(&owner, "acme").await;
    let res = app
        .delete_authed(&member_path(org, owner.id), &owner.access_token)
        .await;
    assert_problem(res, StatusCode::CONFLICT, "last_owner").await;
    assert_eq!(grant_rows(&app, org, owner.id).await, 1);

    // A second owner: either may leave, but not both.
    let second = join(&app, &owner, org, "second", "owner", None).await;
    let res = app
        .delete_authed(&member_path(org, owner.id), &owner.access_token)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app
        .delete_authed(&member_path(org, second.id), &second.access_token)
        .await;
    assert_problem(res, StatusCode::CONFLICT, "last_owner").await;
}

async fn removal_needs_the_rights_and_no_escalation(app: TestApp) {
    let owner = app.user("owner").await;
    let org = app.create_org(&owner, "acme").await;
    let acct = app.create_account(&owner, org, "main").await;
    let admin = join(&app, &owner, org, "admin", "admin", None).await;
    let member = join(&app, &owner, org, "member", "member", None).await;
    let other = join(&app, &owner, org, "other", "viewer", None).await;
    let acct_admin = join(
        &app,
        &owner,
        org,
        "acct-admin",
        "admin",
        Some(json!({"type": "account", "id": acct})),
    )
    .await;

    let cases = [
        (
            "member lacks member:remove",
            &member,
            other.id,
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "admin cannot remove an owner",
            &admin,
            owner.id,
            StatusCode::FORBIDDEN,
            "escalation_denied",
        ),
        (
            // Without member:read at the organization its members are not there for them.
            "account admin cannot even see the organization's members",
            &acct_admin,
            other.id,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "not a member",
            &admin,
            Uuid::now_v7(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            "a stranger",
            &admin,
            app.user("stranger").await.id,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for (what, who, target, status, code) in cases {
        let res = app
            .delete_authed(&member_path(org, target), &who.access_token)
            .await;
        assert_eq!(res.status(), status, "{what}");
        assert_problem(res, status, code).await;
    }
    assert_eq!(all_grant_rows(&app, org).await, 5);

    // An admin removes a member; the owner removes the admin.
    let res = app
        .delete_authed(&member_path(org, member.id), &admin.access_token)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(grant_rows(&app, org, member.id).await, 0);
    let res = app
        .delete_authed(&member_path(org, admin.id), &owner.access_token)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(grant_rows(&app, org, admin.id).await, 0);
    assert_eq!(all_grant_rows(&app, org).await, 3);
    // The removed admin is an outsider now.
    let res = app
        .get_authed(&members_path(org), &admin.access_token)
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let actions = app.audit_actions(owner.id).await;
    assert!(actions.iter().any(|a| a == "member.removed"), "{actions:?}");
}

async fn outsiders_get_404_on_every_member_and_invitation_endpoint(app: TestApp) {
    let owner = app.user("owner").await;
    let org = app.create_org(&owner, "acme").await;
    let res = invite(&app, &owner, org, "p@example.com", "member", None).await;
    let invitation: Value = res.json().await.unwrap();
    let invitation_id = invitation["id"].as_str().unwrap().to_owned();
    let outsider = app.user("outsider").await;
    app.create_org(&outsider, "theirs").await;
    let missing = Uuid::now_v7();

    let body = json!({"email": "q@example.com", "role_id": role("viewer")});
    let cases: Vec<(Method, String, Option<&Value>)> = vec![
        (Method::GET, members_path(org), None),
        (Method::DELETE, member_path(org, owner.id), None),
        (Method::DELETE, member_path(org, outsider.id), None),
        (Method::GET, format!("/v1/orgs/{org}/invitations"), None),
        (
            Method::POST,
            format!("/v1/orgs/{org}/invitations"),
            Some(&body),
        ),
        (
            Method::DELETE,
            format!("/v1/orgs/{org}/invitations/{invitation_id}"),
            None,
        ),
        (Method::GET, members_path(missing), None),
        (
            Method::POST,
            format!("/v1/orgs/{missing}/invitations"),
            Some(&body),
        ),
    ];
    for (method, path, body) in cases {
        let res = app
            .call(method.clone(), &path, &outsider.access_token, body)
            .await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{method} {path}");
        let problem = assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
        assert!(!problem.to_string().contains("p@example.com"));
    }
    // Nothing changed: the owner is still there, the invitation pending, nothing more mailed.
    assert_eq!(grant_rows(&app, org, owner.id).await, 1);
    let listed: Value = app
        .get_authed(&format!("/v1/orgs/{org}/invitations"), &owner.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["status"], "pending");
    // (Registrations mail email verifications; count the invitations.)
    let invitations = service::mail::Mailer::outbox(&app.ctx.db, None, 10)
        .await
        .unwrap()
        .into_iter()
        .filter(|m| m.kind == "invitation")
        .count();
    assert_eq!(invitations, 1);
}
