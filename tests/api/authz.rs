//! `/v1/authz/*` over HTTP: check (one and batch), permissions, subjects, explain; who may ask
//! what; answers follow changes made through the API at once on the same instance.

use reqwest::StatusCode;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{assert_problem, TestApp, TestUser};
use crate::invitations::join;

both_backends!(
    check_answers_for_yourself_and_for_others_with_authz_check,
    a_batch_is_answered_in_order_and_fails_as_a_whole,
    permissions_say_where_each_comes_from,
    subjects_are_every_member_who_may_paged,
    explain_names_the_chain_and_the_nearest_misses,
);

/// An organization with an account A (project P) and a sibling account B; an owner, a viewer
/// at the organization, an admin of A and an admin of B.
struct World {
    org: Uuid,
    account: Uuid,
    sibling: Uuid,
    project: Uuid,
    owner: TestUser,
    viewer: TestUser,
    admin_a: TestUser,
    admin_b: TestUser,
}

impl World {
    /// The owner deletes project P.
    async fn delete_project(&self, app: &TestApp) {
        let path = format!(
            "/v1/orgs/{}/accounts/{}/projects/{}",
            self.org, self.account, self.project
        );
        let res = app.delete_authed(&path, &self.owner.access_token).await;
        assert_eq!(res.status(), StatusCode::NO_CONTENT);
    }
}

async fn world(app: &TestApp) -> World {
    let owner = app.user("owner").await;
    let org = app.create_org(&owner, "acme").await;
    let account = app.create_account(&owner, org, "a").await;
    let sibling = app.create_account(&owner, org, "b").await;
    let project = app.create_project(&owner, org, account, "p").await;
    let viewer = join(app, &owner, org, "viewer", "viewer", None).await;
    let admin_a = join(
        app,
        &owner,
        org,
        "admin-a",
        "admin",
        Some(json!({"type": "account", "id": account})),
    )
    .await;
    let admin_b = join(
        app,
        &owner,
        org,
        "admin-b",
        "admin",
        Some(json!({"type": "account", "id": sibling})),
    )
    .await;
    World {
        org,
        account,
        sibling,
        project,
        owner,
        viewer,
        admin_a,
        admin_b,
    }
}

fn question(org: Uuid, user: Option<Uuid>, scope: (&str, Uuid), permission: &str) -> Value {
    let mut q =
        json!({"org_id": org, "scope": {"type": scope.0, "id": scope.1}, "permission": permission});
    if let Some(user) = user {
        q["user_id"] = json!(user);
    }
    q
}

async fn ask(app: &TestApp, caller: &TestUser, q: &Value) -> reqwest::Response {
    app.post_authed("/v1/authz/check", &caller.access_token, q)
        .await
}

async fn allowed(app: &TestApp, caller: &TestUser, q: Value) -> bool {
    let res = ask(app, caller, &q).await;
    let status = res.status();
    let body: Value = res.json().await.expect("json");
    assert_eq!(status, StatusCode::OK, "{q}: {body}");
    body["allowed"].as_bool().expect("allowed")
}

async fn check_answers_for_yourself_and_for_others_with_authz_check(app: TestApp) {
    let w = world(&app).await;
    let p = ("project", w.project);
    // Yourself.
    assert!(allowed(&app, &w.owner, question(w.org, None, p, "project:delete")).await);
    assert!(allowed(&app, &w.viewer, question(w.org, None, p, "project:read")).await);
    assert!(!allowed(&app, &w.viewer, question(w.org, None, p, "project:update")).await);
    assert!(
        allowed(
            &app,
            &w.viewer,
            question(w.org, Some(w.viewer.id), p, "project:read")
        )
        .await,
        "naming yourself is asking about yourself"
    );
    // Inherited from the account, not above it, not at the sibling.
    assert!(allowed(&app, &w.admin_a, question(w.org, None, p, "project:update")).await);
    assert!(
        !allowed(
            &app,
            &w.admin_a,
            question(w.org, None, ("organization", w.org), "account:create")
        )
        .await
    );
    assert!(!allowed(&app, &w.admin_b, question(w.org, None, p, "project:update")).await);
    // Others: with authz:check at that scope.
    assert!(
        !allowed(
            &app,
            &w.owner,
            question(w.org, Some(w.viewer.id), p, "project:update")
        )
        .await
    );
    assert!(
        allowed(
            &app,
            &w.owner,
            question(w.org, Some(w.admin_a.id), p, "project:update")
        )
        .await
    );
    let res = ask(
        &app,
        &w.viewer,
        &question(w.org, Some(w.owner.id), p, "project:read"),
    )
    .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    // admin of A holds authz:check at A, not at B.
    assert!(
        !allowed(
            &app,
            &w.admin_a,
            question(
                w.org,
                Some(w.viewer.id),
                ("account", w.account),
                "account:update"
            )
        )
        .await
    );
    let res = ask(
        &app,
        &w.admin_a,
        &question(
            w.org,
            Some(w.viewer.id),
            ("account", w.sibling),
            "account:read",
        ),
    )
    .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    // An outsider, about anyone, is not told the organization exists.
    let outsider = app.user("outsider").await;
    assert!(
        !allowed(
            &app,
            &w.owner,
            question(w.org, Some(outsider.id), p, "project:read")
        )
        .await
    );
    for q in [
        question(w.org, None, p, "project:read"),
        question(w.org, Some(w.owner.id), p, "project:read"),
        question(Uuid::now_v7(), None, ("organization", w.org), "org:read"),
    ] {
        assert_problem(
            ask(&app, &outsider, &q).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    // Scopes that are not there, or in another organization.
    let other = app.create_org(&outsider, "other").await;
    let other_account = app.create_account(&outsider, other, "x").await;
    for scope in [
        ("project", Uuid::now_v7()),
        ("account", other_account),
        ("account", w.project),
        ("organization", other),
    ] {
        let res = ask(
            &app,
            &w.owner,
            &question(w.org, None, scope, "project:read"),
        )
        .await;
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    }
    // An unknown permission.
    let res = ask(&app, &w.owner, &question(w.org, None, p, "project:own")).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);

    // Changes through the API show at once on this instance: a grant...
    let res = app
        .post_authed(
            &format!("/v1/orgs/{}/role-assignments", w.org),
            &w.owner.access_token,
            &json!({"user_id": w.viewer.id, "role_id": migration::builtin_role_id("member"), "scope": {"type": "project", "id": w.project}}),
        )
        .await;
    assert_eq!(res.status(), StatusCode::CREATED);
    assert!(allowed(&app, &w.viewer, question(w.org, None, p, "project:update")).await);
    // ...a member removed...
    let res = app
        .delete_authed(
            &format!("/v1/orgs/{}/members/{}", w.org, w.viewer.id),
            &w.owner.access_token,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert!(
        !allowed(
            &app,
            &w.owner,
            question(w.org, Some(w.viewer.id), p, "project:read")
        )
        .await
    );
    assert_problem(
        ask(&app, &w.viewer, &question(w.org, None, p, "project:read")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    // ...a project deleted.
    w.delete_project(&app).await;
    assert_problem(
        ask(&app, &w.owner, &question(w.org, None, p, "project:read")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
}

async fn a_batch_is_answered_in_order_and_fails_as_a_whole(app: TestApp) {
    let w = world(&app).await;
    let p = ("project", w.project);
    let checks = vec![
        question(w.org, Some(w.viewer.id), p, "project:read"),
        question(w.org, Some(w.viewer.id), p, "project:update"),
        question(w.org, Some(w.admin_a.id), p, "project:delete"),
        question(w.org, None, ("organization", w.org), "org:delete"),
        question(w.org, Some(w.admin_b.id), p, "project:read"),
    ];
    let res = ask(&app, &w.owner, &json!({ "checks": checks })).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    let results: Vec<bool> = body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["allowed"].as_bool().expect("allowed"))
        .collect();
    assert_eq!(results, [true, false, true, true, false]);

    // Too many, none, or one that cannot be asked: the whole batch fails, naming it.
    let many: Vec<Value> = (0..101)
        .map(|_| question(w.org, None, p, "project:read"))
        .collect();
    let res = ask(&app, &w.owner, &json!({ "checks": many })).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = ask(&app, &w.owner, &json!({ "checks": [] })).await;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let res = ask(
        &app,
        &w.viewer,
        &json!({ "checks": [question(w.org, None, p, "project:read"), question(w.org, Some(w.owner.id), p, "project:read")] }),
    )
    .await;
    let problem = assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap_or("")
            .contains("checks[1]"),
        "{problem}"
    );
}

async fn permissions_of(app: &TestApp, caller: &TestUser, query: &str) -> reqwest::Response {
    app.get_authed(
        &format!("/v1/authz/permissions?{query}"),
        &caller.access_token,
    )
    .await
}

async fn permissions_say_where_each_comes_from(app: TestApp) {
    let w = world(&app).await;
    let query = |user: Option<Uuid>| {
        let mut q = format!("org_id={}&scope_type=project&scope_id={}", w.org, w.project);
        if let Some(u) = user {
            q.push_str(&format!("&user_id={u}"));
        }
        q
    };
    let res = permissions_of(&app, &w.admin_a, &query(None)).await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["user_id"], json!(w.admin_a.id));
    let held: Vec<&str> = body["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["permission"].as_str().unwrap())
        .collect();
    assert!(
        held.contains(&"project:update") && !held.contains(&"org:delete"),
        "{held:?}"
    );
    let update = body["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["permission"] == "project:update")
        .unwrap();
    assert_eq!(update["sources"][0]["role"]["name"], "admin");
    assert_eq!(
        update["sources"][0]["granted_at"],
        json!({"type": "account", "id": w.account})
    );

    // The owner asking about the viewer: every read, from the organization-wide grant.
    let res = permissions_of(&app, &w.owner, &query(Some(w.viewer.id))).await;
    let body: Value = res.json().await.unwrap();
    for p in body["permissions"].as_array().unwrap() {
        assert!(p["permission"].as_str().unwrap().ends_with(":read"), "{p}");
        assert_eq!(p["sources"][0]["granted_at"]["type"], "organization");
    }
    // The viewer may not ask about the owner; an outsider learns nothing.
    let res = permissions_of(&app, &w.viewer, &query(Some(w.owner.id))).await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
    let outsider = app.user("outsider").await;
    let res = permissions_of(&app, &outsider, &query(None)).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}

async fn subjects_are_every_member_who_may_paged(app: TestApp) {
    let w = world(&app).await;
    let all = |scope: (&str, Uuid), permission: &str, caller: &TestUser| {
        let (app, caller) = (&app, caller.clone());
        let base = format!(
            "/v1/authz/subjects?org_id={}&scope_type={}&scope_id={}&permission={permission}&limit=1",
            w.org, scope.0, scope.1
        );
        async move {
            let mut users = Vec::new();
            let mut path = base.clone();
            loop {
                let res = app.get_authed(&path, &caller.access_token).await;
                assert_eq!(res.status(), StatusCode::OK);
                let page: Value = res.json().await.unwrap();
                let items = page["items"].as_array().unwrap();
                assert!(items.len() <= 1);
                users.extend(
                    items
                        .iter()
                        .map(|i| i["user_id"].as_str().unwrap().to_owned()),
                );
                match page["next_cursor"].as_str() {
                    Some(c) => path = format!("{base}&cursor={c}"),
                    None => return users,
                }
            }
        }
    };
    let mut expected: Vec<String> = [&w.owner, &w.viewer, &w.admin_a]
        .iter()
        .map(|u| u.id.to_string())
        .collect();
    expected.sort();
    assert_eq!(
        all(("project", w.project), "project:read", &w.owner).await,
        expected
    );
    assert_eq!(
        all(("organization", w.org), "org:delete", &w.owner).await,
        [w.owner.id.to_string()]
    );
    let mut b = vec![w.owner.id.to_string(), w.admin_b.id.to_string()];
    b.sort();
    assert_eq!(
        all(("account", w.sibling), "account:update", &w.admin_b).await,
        b
    );
    let res = app
        .get_authed(
            &format!(
                "/v1/authz/subjects?org_id={}&scope_type=project&scope_id={}&permission=project:read",
                w.org, w.project
            ),
            &w.viewer.access_token,
        )
        .await;
    assert_problem(res, StatusCode::FORBIDDEN, "forbidden").await;
}

async fn explain(app: &TestApp, caller: &TestUser, q: Value) -> Value {
    let res = app
        .post_authed("/v1/authz/explain", &caller.access_token, &q)
        .await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

async fn explain_names_the_chain_and_the_nearest_misses(app: TestApp) {
    let w = world(&app).await;
    let p = ("project", w.project);
    let path = json!([
        {"type": "organization", "id": w.org},
        {"type": "account", "id": w.account},
        {"type": "project", "id": w.project},
    ]);

    let yes = explain(
        &app,
        &w.owner,
        question(w.org, Some(w.admin_a.id), p, "project:update"),
    )
    .await;
    assert_eq!(yes["allowed"], true);
    assert_eq!(yes["matched_policy"], "p, admin, *, project:update");
    assert_eq!(yes["chain"][0]["role"]["name"], "admin");
    assert_eq!(
        yes["chain"][0]["granted_at"],
        json!({"type": "account", "id": w.account})
    );
    assert_eq!(yes["scope_path"], path);
    assert_eq!(yes["reasons"], json!([]));

    let lacks = explain(
        &app,
        &w.owner,
        question(w.org, Some(w.viewer.id), p, "project:update"),
    )
    .await;
    assert_eq!(lacks["allowed"], false);
    assert_eq!(lacks["reasons"], json!(["role_lacks_permission"]));
    assert_eq!(lacks["matched_policy"], Value::Null);

    let sibling = explain(
        &app,
        &w.owner,
        question(w.org, Some(w.admin_b.id), p, "project:update"),
    )
    .await;
    assert_eq!(sibling["reasons"], json!(["grant_at_sibling_scope"]));

    let outsider = app.user("outsider").await;
    let not_member = explain(
        &app,
        &w.owner,
        question(w.org, Some(outsider.id), p, "project:read"),
    )
    .await;
    assert_eq!(not_member["reasons"], json!(["not_a_member"]));

    // The same answers as check.
    for (user, permission) in [
        (w.admin_a.id, "project:update"),
        (w.viewer.id, "project:update"),
    ] {
        let q = question(w.org, Some(user), p, permission);
        assert_eq!(
            explain(&app, &w.owner, q.clone()).await["allowed"]
                .as_bool()
                .unwrap(),
            allowed(&app, &w.owner, q).await
        );
    }

    // A deleted project is explained, not hidden from someone who may ask.
    w.delete_project(&app).await;
    let deleted = explain(
        &app,
        &w.owner,
        question(w.org, Some(w.admin_a.id), p, "project:update"),
    )
    .await;
    assert_eq!(deleted["allowed"], false);
    assert_eq!(deleted["reasons"], json!(["object_deleted"]));
    assert_eq!(deleted["scope_path"], path);
}
