//! Roles and role assignments: the built-in roles, custom roles, the escalation guard and the
//! last-owner rule as tables, scope inheritance and union, tenant isolation of custom roles,
//! concurrent grants, and the filtered, paginated lists.

use std::collections::BTreeMap;

use futures_util::future::join_all;
use reqwest::{Method, StatusCode};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter, Set};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{assert_problem, TestApp, TestUser};

both_backends!(
    builtin_roles_are_listed_read_only_with_the_policy_sets,
    custom_role_lifecycle,
    escalation_guard_table,
    last_owner_table,
    rights_inherit_down_the_scope_chain_and_add_up,
    custom_roles_never_reach_another_organization,
    concurrent_identical_grants_leave_one_row,
    assignment_lists_show_what_the_caller_may_read,
    role_list_pages_through_builtin_then_custom_roles,
);

fn builtin(name: &str) -> Uuid {
    migration::builtin_role_id(name)
}

/// Makes `user` a member of `org` without any role, as an accepted invitation would.
async fn join(app: &TestApp, org: Uuid, user: &TestUser) {
    entity::memberships::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(org),
        user_id: Set(user.id),
        created_at: Set(chrono::Utc::now()),
    }
    .insert(&app.ctx.db)
    .await
    .expect("membership");
}

fn grant_body(user: Uuid, role: Uuid, scope_type: &str, scope_id: Uuid) -> Value {
    json!({"user_id": user, "role_id": role, "scope": {"type": scope_type, "id": scope_id}})
}

async fn grant(
    app: &TestApp,
    actor: &TestUser,
    org: Uuid,
    user: Uuid,
    role: Uuid,
    (scope_type, scope_id): (&str, Uuid),
) -> reqwest::Response {
    app.post_authed(
        &format!("/v1/orgs/{org}/role-assignments"),
        &actor.access_token,
        &grant_body(user, role, scope_type, scope_id),
    )
    .await
}

/// A new member of `org` holding `role` at the scope, granted by `owner`; and the grant's id.
async fn member(
    app: &TestApp,
    owner: &TestUser,
    org: Uuid,
    name: &str,
    role: Uuid,
    scope: (&str, Uuid),
) -> (TestUser, Uuid) {
    let user = app.user(name).await;
    join(app, org, &user).await;
    let res = grant(app, owner, org, user.id, role, scope).await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    (user, id_of(&body))
}

fn id_of(body: &Value) -> Uuid {
    body["id"].as_str().expect("id").parse().expect("uuid")
}

/// The id of `user`'s assignment of `role` at organization scope.
async fn assignment_of(app: &TestApp, org: Uuid, user: Uuid, role: Uuid) -> Uuid {
    let m = entity::memberships::Entity::find()
        .filter(entity::memberships::Column::OrganizationId.eq(org))
        .filter(entity::memberships::Column::UserId.eq(user))
        .one(&app.ctx.db)
        .await
        .unwrap()
        .expect("membership");
    entity::role_assignments::Entity::find()
        .filter(entity::role_assignments::Column::MembershipId.eq(m.id))
        .filter(entity::role_assignments::Column::RoleId.eq(role))
        .filter(entity::role_assignments::Column::ScopeId.eq(org))
        .one(&app.ctx.db)
        .await
        .unwrap()
        .expect("assignment")
        .id
}

async fn json_ok(res: reqwest::Response) -> Value {
    let status = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// Every item of a list, following `next_cursor` with pages of `limit`.
async fn all_pages(app: &TestApp, user: &TestUser, path: &str, limit: u32) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor: Option<String> = None;
    let sep = if path.contains('?') { '&' } else { '?' };
    loop {
        let mut url = format!("{path}{sep}limit={limit}");
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page = json_ok(app.get_authed(&url, &user.access_token).await).await;
        let got = page["items"].as_array().unwrap();
        assert!(got.len() <= limit as usize);
        items.extend(got.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    items
}

async fn builtin_roles_are_listed_read_only_with_the_policy_sets(app: TestApp) {
    let owner = app.user("owner").await;
    let outsider = app.user("outsider").await;
    let org = app.create_org(&owner, "acme").await;
    let (viewer, _) = member(
        &app,
        &owner,
        org,
        "viewer",
        builtin("viewer"),
        ("organization", org),
    )
    .await;
    let base = format!("/v1/orgs/{org}/roles");

    let policy = service::authz::PolicySet::embedded().unwrap();
    let page = json_ok(app.get_authed(&base, &viewer.access_token).await).await;
    let items = page["items"].as_array().unwrap();
    let names: Vec<&str> = items.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["admin", "member", "owner", "viewer"]);
    assert!(page["next_cursor"].is_null());
    for role in items {
        let name = role["name"].as_str().unwrap();
        let mut expected: Vec<&str> = policy.builtin[name].iter().map(|p| p.as_str()).collect();
        expected.sort_unstable();
        assert_eq!(role["id"], json!(builtin(name)), "{name}");
        assert_eq!(role["permissions"], json!(expected), "{name}");
        assert_eq!(role["builtin"], true);
        assert!(role["organization_id"].is_null());
    }
    let one = json_ok(
        app.get_authed(
            &format!("{base}/{}", builtin("member")),
            &viewer.access_token,
        )
        .await,
    )
    .await;
    assert_eq!(one["permissions"], items[1]["permissions"]);

    // Read-only: not even the owner changes a built-in role.
    let path = format!("{base}/{}", builtin("viewer"));
    let res = app
        .call(
            Method::PATCH,
            &path,
            &owner.access_token,
            Some(&json!({"permissions": ["org:read"], "version": 1})),
        )
        .await;
    assert_problem(res, StatusCode::CONFLICT, "role_builtin").await;
    let res = app.delete_authed(&path, &owner.access_token).await;
    assert_problem(res, StatusCode::CONFLICT, "role_builtin").await;

    // A viewer reads roles but defines none; an outsider sees nothing at all.
    let create = json!({"name": "x", "permissions": ["org:read"]});
    let res = app.post_authed(&base, &viewer.access_token, &create).await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let assignments = format!("/v1/orgs/{org}/role-assignments");
    let cases: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, base.clone(), None),
        (Method::POST, base.clone(), Some(create.clone())),
        (Method::GET, path.clone(), None),
        (Method::DELETE, path.clone(), None),
        (Method::GET, assignments.clone(), None),
        (
            Method::POST,
            assignments.clone(),
            Some(grant_body(
                outsider.id,
                builtin("owner"),
                "organization",
                org,
            )),
        ),
        (
            Method::DELETE,
            format!(
                "{assignments}/{}",
                assignment_of(&app, org, owner.id, builtin("owner")).await
            ),
            None,
        ),
    ];
    for (method, path, body) in cases {
        let res = app
            .call(method.clone(), &path, &outsider.access_token, body.as_ref())
            .await;
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    }
}

async fn custom_role_lifecycle(app: TestApp) {
    let owner = app.user("owner").await;
    let org = app.create_org(&owner, "acme").await;
    let base = format!("/v1/orgs/{org}/roles");
    let t = &owner.access_token;

    let created = app
        .create(
            &owner,
            &base,
            &json!({
                "name": "deployer",
                "description": "Ships projects",
                "permissions": ["project:update", "project:read", "project:read"],
            }),
        )
        .await;
    assert_eq!(
        created["permissions"],
        json!(["project:read", "project:update"])
    );
    assert_eq!(created["builtin"], false);
    assert_eq!(created["organization_id"], json!(org));
    assert_eq!(created["version"], 1);
    let role = id_of(&created);
    let path = format!("{base}/{role}");
    let res = app.get_authed(&path, t).await;
    assert_eq!(res.headers()["etag"], "\"1\"");
    assert_eq!(json_ok(res).await["description"], "Ships projects");

    // Bad input: every field reported, nothing written.
    let res = app
        .post_authed(
            &base,
            t,
            &json!({"name": "Bad Name", "permissions": ["org:read", "org:own"]}),
        )
        .await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let fields: BTreeMap<String, String> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().into(),
                e["code"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(fields["permissions"], "unknown_permission");
    assert_eq!(fields["name"], "invalid_role_name");
    let res = app
        .post_authed(&base, t, &json!({"name": "empty", "permissions": []}))
        .await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    for name in ["admin", "owner", "deployer"] {
        let res = app
            .post_authed(
                &base,
                t,
                &json!({"name": name, "permissions": ["org:read"]}),
            )
            .await;
        assert_problem(res, StatusCode::CONFLICT, "role_name_taken").await;
    }

    // PATCH: a version is required and checked; names stay unique; "" clears the description.
    let patch = json!({"permissions": ["project:read"]});
    let res = app.call(Method::PATCH, &path, t, Some(&patch)).await;
    assert_problem(
        res,
        StatusCode::PRECONDITION_REQUIRED,
        "precondition_required",
    )
    .await;
    let res = app
        .call(
            Method::PATCH,
            &path,
            t,
            Some(&json!({"permissions": ["project:read"], "version": 7})),
        )
        .await;
    assert_problem(res, StatusCode::PRECONDITION_FAILED, "version_mismatch").await;
    let res = app
        .call(
            Method::PATCH,
            &path,
            t,
            Some(&json!({"permissions": ["nope:nope"], "version": 1})),
        )
        .await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let res = app
        .call(
            Method::PATCH,
            &path,
            t,
            Some(&json!({"name": "member", "version": 1})),
        )
        .await;
    assert_problem(res, StatusCode::CONFLICT, "role_name_taken").await;
    let updated = json_ok(
        app.call(
            Method::PATCH,
            &path,
            t,
            Some(&json!({"name": "shipper", "description": "", "permissions": ["project:read"], "version": 1})),
        )
        .await,
    )
    .await;
    assert_eq!(updated["version"], 2);
    assert_eq!(updated["name"], "shipper");
    assert!(updated["description"].is_null());
    assert_eq!(updated["permissions"], json!(["project:read"]));
    app.create(
        &owner,
        &base,
        &json!({"name": "deployer", "permissions": ["org:read"]}),
    )
    .await;

    // Deleting a role takes its grants with it.
    let (holder, _) = member(&app, &owner, org, "holder", role, ("organization", org)).await;
    let res = app
        .client
        .delete(app.url(&path))
        .bearer_auth(t)
        .header("If-Match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::PRECONDITION_FAILED, "version_mismatch").await;
    let res = app.delete_authed(&path, t).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app.get_authed(&path, t).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let left = json_ok(
        app.get_authed(
            &format!("/v1/orgs/{org}/role-assignments?user_id={}", holder.id),
            t,
        )
        .await,
    )
    .await;
    assert_eq!(left["items"], json!([]));
    let actions = app.audit_actions(owner.id).await;
    for action in [
        "role.created",
        "role.updated",
        "role.assigned",
        "role.deleted",
    ] {
        assert!(
            actions.iter().any(|a| a == action),
            "{action} in {actions:?}"
        );
    }
}

/// Who sends what where.
type Request = (TestUser, Method, String, Option<Value>);

async fn escalation_guard_table(app: TestApp) {
    let owner = app.user("owner").await;
    let org = app.create_org(&owner, "acme").await;
    let acct_a = app.create_account(&owner, org, "a").await;
    let acct_b = app.create_account(&owner, org, "b").await;
    let org_scope = ("organization", org);
    let (admin, _) = member(&app, &owner, org, "admin", builtin("admin"), org_scope).await;
    let (memb, _) = member(&app, &owner, org, "member", builtin("member"), org_scope).await;
    let (acct_admin, _) = member(
        &app,
        &owner,
        org,
        "acct-admin",
        builtin("admin"),
        ("account", acct_a),
    )
    .await;
    let target = app.user("target").await;
    join(&app, org, &target).await;
    let owner_grant = assignment_of(&app, org, owner.id, builtin("owner")).await;
    let roles = format!("/v1/orgs/{org}/roles");
    let danger = id_of(
        &app.create(
            &owner,
            &roles,
            &json!({"name": "danger", "permissions": ["org:delete"]}),
        )
        .await,
    );

    let as_of = |u: &TestUser| u.clone();
    let grant_case = |actor: &TestUser, role: &str, scope: (&'static str, Uuid)| {
        (
            as_of(actor),
            Method::POST,
            format!("/v1/orgs/{org}/role-assignments"),
            Some(grant_body(target.id, builtin(role), scope.0, scope.1)),
        )
    };
    let define = |actor: &TestUser, name: &str, perms: &[&str]| {
        (
            as_of(actor),
            Method::POST,
            roles.clone(),
            Some(json!({"name": name, "permissions": perms})),
        )
    };
    let cases: Vec<(Request, StatusCode, &str)> = vec![
        (
            grant_case(&admin, "owner", org_scope),
            StatusCode::FORBIDDEN,
            "escalation_denied",
        ),
        (
            grant_case(&admin, "admin", org_scope),
            StatusCode::CREATED,
            "",
        ),
        (
            grant_case(&memb, "viewer", org_scope),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            grant_case(&acct_admin, "viewer", ("account", acct_a)),
            StatusCode::CREATED,
            "",
        ),
        (
            grant_case(&acct_admin, "admin", ("account", acct_a)),
            StatusCode::CREATED,
            "",
        ),
        (
            grant_case(&acct_admin, "owner", ("account", acct_a)),
            StatusCode::FORBIDDEN,
            "escalation_denied",
        ),
        (
            grant_case(&acct_admin, "viewer", org_scope),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            // A scope they may not read is, to them, no scope at all.
            grant_case(&acct_admin, "viewer", ("account", acct_b)),
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
        ),
        (
            grant_case(&owner, "owner", ("account", acct_b)),
            StatusCode::CREATED,
            "",
        ),
        (
            define(&admin, "wrecker", &["org:read", "org:delete"]),
            StatusCode::FORBIDDEN,
            "escalation_denied",
        ),
        (
            define(&admin, "reader", &["project:read"]),
            StatusCode::CREATED,
            "",
        ),
        (
            define(&memb, "sneaky", &["project:read"]),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            define(&acct_admin, "sneaky", &["project:read"]),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            (
                admin.clone(),
                Method::PATCH,
                format!("{roles}/{danger}"),
                Some(json!({"permissions": ["org:read"], "version": 1})),
            ),
            StatusCode::FORBIDDEN,
            "escalation_denied",
        ),
        (
            (
                admin.clone(),
                Method::DELETE,
                format!("{roles}/{danger}"),
                None,
            ),
            StatusCode::FORBIDDEN,
            "escalation_denied",
        ),
        (
            (
                admin.clone(),
                Method::POST,
                format!("/v1/orgs/{org}/role-assignments"),
                Some(grant_body(target.id, danger, "organization", org)),
            ),
            StatusCode::FORBIDDEN,
            "escalation_denied",
        ),
        (
            (
                admin.clone(),
                Method::DELETE,
                format!("/v1/orgs/{org}/role-assignments/{owner_grant}"),
                None,
            ),
            StatusCode::FORBIDDEN,
            "escalation_denied",
        ),
        (
            (
                memb.clone(),
                Method::DELETE,
                format!("/v1/orgs/{org}/role-assignments/{owner_grant}"),
                None,
            ),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            (
                acct_admin.clone(),
                Method::DELETE,
                format!("/v1/orgs/{org}/role-assignments/{owner_grant}"),
                None,
            ),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ];
    for ((actor, method, path, body), status, code) in cases {
        let res = app
            .call(method.clone(), &path, &actor.access_token, body.as_ref())
            .await;
        let case = format!("{method} {path} {body:?}");
        if status.is_success() {
            assert_eq!(
                res.status(),
                status,
                "{case}: {}",
                res.text().await.unwrap()
            );
        } else {
            let got = assert_problem(res, status, code).await;
            assert_eq!(got["code"], code, "{case}");
        }
    }

    // The account admin revokes what it granted at its account.
    let granted = json_ok(
        app.get_authed(
            &format!(
                "/v1/orgs/{org}/role-assignments?scope_type=account&scope_id={acct_a}&role_id={}",
                builtin("viewer")
            ),
            &acct_admin.access_token,
        )
        .await,
    )
    .await;
    let id = granted["items"][0]["id"].as_str().unwrap();
    let res = app
        .delete_authed(
            &format!("/v1/orgs/{org}/role-assignments/{id}"),
            &acct_admin.access_token,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
}

async fn last_owner_table(app: TestApp) {
    let owner = app.user("owner").await;
    let org = app.create_org(&owner, "acme").await;
    let acct = app.create_account(&owner, org, "main").await;
    let own_grant = assignment_of(&app, org, owner.id, builtin("owner")).await;
    // An owner at an account does not keep the organization owned.
    let (acct_owner, acct_owner_grant) = member(
        &app,
        &owner,
        org,
        "acct-owner",
        builtin("owner"),
        ("account", acct),
    )
    .await;
    let (second, second_grant) = member(
        &app,
        &owner,
        org,
        "second",
        builtin("owner"),
        ("organization", org),
    )
    .await;

    let steps: Vec<(&TestUser, Uuid, StatusCode, &str)> = vec![
        // Two owners: one may step down (here the founder, demoting themselves).
        (&owner, own_grant, StatusCode::NO_CONTENT, ""),
        // Now the second is the last owner: not by themselves…
        (&second, second_grant, StatusCode::CONFLICT, "last_owner"),
        // …and an account owner cannot even see an organization-level grant.
        (
            &acct_owner,
            second_grant,
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (&second, acct_owner_grant, StatusCode::NO_CONTENT, ""),
    ];
    for (actor, grant, status, code) in steps {
        let res = app
            .delete_authed(
                &format!("/v1/orgs/{org}/role-assignments/{grant}"),
                &actor.access_token,
            )
            .await;
        if status.is_success() {
            assert_eq!(res.status(), status);
        } else {
            assert_problem(res, status, code).await;
        }
    }

    // A sole owner from the start cannot remove their own grant either.
    let solo = app.user("solo").await;
    let org2 = app.create_org(&solo, "solo").await;
    let grant = assignment_of(&app, org2, solo.id, builtin("owner")).await;
    let res = app
        .delete_authed(
            &format!("/v1/orgs/{org2}/role-assignments/{grant}"),
            &solo.access_token,
        )
        .await;
    assert_problem(res, StatusCode::CONFLICT, "last_owner").await;
    let owners = entity::role_assignments::Entity::find()
        .filter(entity::role_assignments::Column::OrganizationId.eq(org2))
        .count(&app.ctx.db)
        .await
        .unwrap();
    assert_eq!(owners, 1);
}

async fn rights_inherit_down_the_scope_chain_and_add_up(app: TestApp) {
    let owner = app.user("owner").await;
    let org = app.create_org(&owner, "acme").await;
    let acct_a = app.create_account(&owner, org, "a").await;
    let acct_b = app.create_account(&owner, org, "b").await;
    let pa = app.create_project(&owner, org, acct_a, "pa").await;
    let pa2 = app.create_project(&owner, org, acct_a, "pa2").await;
    let pb = app.create_project(&owner, org, acct_b, "pb").await;
    let project = |a: Uuid, p: Uuid| format!("/v1/orgs/{org}/accounts/{a}/projects/{p}");

    // viewer at the organization + member at account A = project:update in A only.
    let (user, _) = member(
        &app,
        &owner,
        org,
        "u",
        builtin("viewer"),
        ("organization", org),
    )
    .await;
    let res = grant(
        &app,
        &owner,
        org,
        user.id,
        builtin("member"),
        ("account", acct_a),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let rename = json!({"name": "renamed", "version": 1});
    let res = app
        .call(
            Method::PATCH,
            &project(acct_a, pa),
            &user.access_token,
            Some(&rename),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .call(
            Method::PATCH,
            &project(acct_b, pb),
            &user.access_token,
            Some(&rename),
        )
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;

    // A role at project P only: P is visible, its siblings and its account are not.
    let (narrow, _) = member(
        &app,
        &owner,
        org,
        "narrow",
        builtin("viewer"),
        ("project", pa),
    )
    .await;
    let t = &narrow.access_token;
    assert_eq!(
        app.get_authed(&project(acct_a, pa), t).await.status(),
        StatusCode::OK
    );
    let res = app.get_authed(&project(acct_a, pa2), t).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let res = app
        .get_authed(&format!("/v1/orgs/{org}/accounts/{acct_a}"), t)
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}

async fn custom_roles_never_reach_another_organization(app: TestApp) {
    let owner_a = app.user("owner-a").await;
    let owner_b = app.user("owner-b").await;
    let org_a = app.create_org(&owner_a, "org-a").await;
    let org_b = app.create_org(&owner_b, "org-b").await;
    let acct_a = app.create_account(&owner_a, org_a, "main").await;
    let acct_b = app.create_account(&owner_b, org_b, "main").await;
    let custom = id_of(
        &app.create(
            &owner_a,
            &format!("/v1/orgs/{org_a}/roles"),
            &json!({"name": "reader", "permissions": ["org:read", "account:read", "project:read"]}),
        )
        .await,
    );

    // Another organization's custom role does not exist in B.
    let both = app.user("both").await;
    join(&app, org_b, &both).await;
    let res = grant(
        &app,
        &owner_b,
        org_b,
        both.id,
        custom,
        ("organization", org_b),
    )
    .await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["code"], "unknown_role");
    let res = app
        .get_authed(
            &format!("/v1/orgs/{org_b}/roles/{custom}"),
            &owner_b.access_token,
        )
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    // Nor does a scope of A in B, nor may a non-member be granted anything.
    let res = grant(
        &app,
        &owner_b,
        org_b,
        both.id,
        builtin("viewer"),
        ("account", acct_a),
    )
    .await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["code"], "unknown_scope");
    let res = grant(
        &app,
        &owner_b,
        org_b,
        owner_a.id,
        builtin("viewer"),
        ("organization", org_b),
    )
    .await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "user_id");
    assert_eq!(body["errors"][0]["code"], "not_a_member");

    // A member of both with A's custom role at A's top reads A's accounts, nothing in B.
    join(&app, org_a, &both).await;
    let res = grant(
        &app,
        &owner_a,
        org_a,
        both.id,
        custom,
        ("organization", org_a),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let t = &both.access_token;
    let res = app
        .get_authed(&format!("/v1/orgs/{org_a}/accounts/{acct_a}"), t)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let res = app
        .get_authed(&format!("/v1/orgs/{org_b}/accounts/{acct_b}"), t)
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let list = json_ok(
        app.get_authed(&format!("/v1/orgs/{org_b}/accounts"), t)
            .await,
    )
    .await;
    assert_eq!(list["items"], json!([]));
}

async fn concurrent_identical_grants_leave_one_row(app: TestApp) {
    let owner = app.user("owner").await;
    let org = app.create_org(&owner, "acme").await;
    let user = app.user("user").await;
    join(&app, org, &user).await;
    let path = format!("/v1/orgs/{org}/role-assignments");
    let body = grant_body(user.id, builtin("viewer"), "organization", org);
    let results =
        join_all((0..50).map(|_| app.post_authed(&path, &owner.access_token, &body))).await;
    let mut created = 0;
    for res in results {
        match res.status() {
            StatusCode::CREATED => created += 1,
            StatusCode::CONFLICT => {
                let body: Value = res.json().await.unwrap();
                assert!(
                    ["assignment_exists", "concurrent_change"]
                        .contains(&body["code"].as_str().unwrap()),
                    "{body}"
                );
            }
            other => panic!("{other}: {}", res.text().await.unwrap_or_default()),
        }
    }
    assert_eq!(created, 1);
    let rows = entity::role_assignments::Entity::find()
        .filter(entity::role_assignments::Column::OrganizationId.eq(org))
        .filter(entity::role_assignments::Column::RoleId.eq(builtin("viewer")))
        .count(&app.ctx.db)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    // Once settled, a repeat is a plain duplicate.
    let res = app.post_authed(&path, &owner.access_token, &body).await;
    assert_problem(res, StatusCode::CONFLICT, "assignment_exists").await;
}

async fn assignment_lists_show_what_the_caller_may_read(app: TestApp) {
    let owner = app.user("owner").await;
    let org = app.create_org(&owner, "acme").await;
    let acct_a = app.create_account(&owner, org, "a").await;
    let acct_b = app.create_account(&owner, org, "b").await;
    let pa = app.create_project(&owner, org, acct_a, "pa").await;
    let org_scope = ("organization", org);
    let (viewer, _) = member(&app, &owner, org, "viewer", builtin("viewer"), org_scope).await;
    let (acct_admin, _) = member(
        &app,
        &owner,
        org,
        "acct-admin",
        builtin("admin"),
        ("account", acct_a),
    )
    .await;
    let reader = id_of(
        &app.create(
            &owner,
            &format!("/v1/orgs/{org}/roles"),
            &json!({"name": "reader", "permissions": ["project:read"]}),
        )
        .await,
    );
    let (plain, _) = member(&app, &owner, org, "plain", reader, ("account", acct_b)).await;
    let res = grant(
        &app,
        &owner,
        org,
        plain.id,
        builtin("viewer"),
        ("project", pa),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let res = grant(
        &app,
        &owner,
        org,
        viewer.id,
        builtin("member"),
        ("account", acct_b),
    )
    .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    let base = format!("/v1/orgs/{org}/role-assignments");

    // role:read at the organization: everything, in pages.
    let everything = all_pages(&app, &viewer, &base, 2).await;
    assert_eq!(everything.len(), 6, "{everything:?}");
    let mut ids: Vec<&str> = everything
        .iter()
        .map(|a| a["id"].as_str().unwrap())
        .collect();
    ids.dedup();
    assert_eq!(ids.len(), 6);
    let first = &everything[0];
    assert_eq!(first["user_id"], json!(owner.id));
    assert_eq!(first["role_name"], "owner");
    assert_eq!(first["scope"], json!({"type": "organization", "id": org}));
    assert_eq!(first["granted_by"], json!(owner.id));

    let count = |user: &TestUser, query: String| {
        let (app, user) = (&app, user.clone());
        let path = format!("{base}{query}");
        async move { all_pages(app, &user, &path, 50).await.len() }
    };
    assert_eq!(count(&viewer, format!("?user_id={}", plain.id)).await, 2);
    assert_eq!(
        count(&viewer, format!("?role_id={}", builtin("viewer"))).await,
        2
    );
    assert_eq!(
        count(&viewer, format!("?scope_type=account&scope_id={acct_b}")).await,
        2
    );
    assert_eq!(
        count(
            &viewer,
            format!("?scope_type=account&scope_id={acct_b}&user_id={}", plain.id)
        )
        .await,
        1
    );
    // Each scope filter narrows on its own: every grant at an account scope.
    let at_accounts = all_pages(&app, &viewer, &format!("{base}?scope_type=account"), 2).await;
    assert!(!at_accounts.is_empty());
    assert!(at_accounts.iter().all(|a| a["scope"]["type"] == "account"));

    // Without role:read anywhere: only one's own grants, whoever is asked about.
    let own = all_pages(&app, &plain, &base, 1).await;
    assert_eq!(own.len(), 2);
    assert!(own.iter().all(|a| a["user_id"] == json!(plain.id)));
    assert_eq!(count(&plain, format!("?user_id={}", owner.id)).await, 0);

    // role:read at account A: one's own plus what lies at or below A.
    let seen = all_pages(&app, &acct_admin, &base, 50).await;
    let mut scopes: Vec<String> = seen
        .iter()
        .map(|a| {
            format!(
                "{}:{}",
                a["role_name"].as_str().unwrap(),
                a["scope"]["type"].as_str().unwrap()
            )
        })
        .collect();
    scopes.sort();
    assert_eq!(scopes, ["admin:account", "viewer:project"]);
}

async fn role_list_pages_through_builtin_then_custom_roles(app: TestApp) {
    let owner = app.user("owner").await;
    let org = app.create_org(&owner, "acme").await;
    let other = app.create_org(&owner, "other").await;
    let base = format!("/v1/orgs/{org}/roles");
    for name in ["c1", "c2", "c3"] {
        app.create(
            &owner,
            &base,
            &json!({"name": name, "permissions": ["org:read"]}),
        )
        .await;
    }
    app.create(
        &owner,
        &format!("/v1/orgs/{other}/roles"),
        &json!({"name": "elsewhere", "permissions": ["org:read"]}),
    )
    .await;
    for limit in [1, 3, 4, 7, 100] {
        let names: Vec<String> = all_pages(&app, &owner, &base, limit)
            .await
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            ["admin", "member", "owner", "viewer", "c1", "c2", "c3"],
            "limit {limit}"
        );
    }
}
