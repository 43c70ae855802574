//! Organizations, accounts and projects: the owner's lifecycle, slugs, optimistic locking,
//! soft deletion, outsiders, and the schema refusing cross-tenant rows.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{assert_problem, TestApp};

both_backends!(
    owner_lifecycle_of_an_organization,
    slugs_are_unique_among_live_rows_case_insensitively,
    accounts_and_projects_under_an_organization,
    deleting_an_account_hides_everything_below_it,
    outsiders_get_404_for_everything_under_an_organization,
    lists_are_paginated_and_filtered,
    the_database_refuses_cross_tenant_rows,
);

async fn owner_lifecycle_of_an_organization(app: TestApp) {
    let owner = app.user("owner").await;
    let created = app
        .create(
            &owner,
            "/v1/orgs",
            &json!({"name": " Acme Inc. ", "slug": "Acme"}),
        )
        .await;
    assert_eq!(created["slug"], "acme");
    assert_eq!(created["name"], "Acme Inc.");
    assert_eq!(created["version"], 1);
    let org = created["id"].as_str().unwrap().to_owned();

    let res = app
        .get_authed(&format!("/v1/orgs/{org}"), &owner.access_token)
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["etag"], "\"1\"");

    let mine: Value = app
        .get_authed("/v1/orgs", &owner.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
    assert!(mine["next_cursor"].is_null());

    // PATCH needs a version; a stale one is 412; the right one bumps it.
    let path = format!("/v1/orgs/{org}");
    let patch = json!({"name": "Acme"});
    let res = app
        .call(Method::PATCH, &path, &owner.access_token, Some(&patch))
        .await;
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
            &owner.access_token,
            Some(&json!({"name": "Acme", "version": 7})),
        )
        .await;
    assert_problem(res, StatusCode::PRECONDITION_FAILED, "version_mismatch").await;
    let res = app
        .call(
            Method::PATCH,
            &path,
            &owner.access_token,
            Some(&json!({"name": "Acme", "version": 1})),
        )
        .await;
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        (body["name"].as_str(), body["version"].as_i64()),
        (Some("Acme"), Some(2))
    );

    // DELETE checks If-Match when given.
    let res = app
        .client
        .delete(app.url(&path))
        .bearer_auth(&owner.access_token)
        .header("If-Match", "\"1\"")
        .send()
        .await
        .unwrap();
    assert_problem(res, StatusCode::PRECONDITION_FAILED, "version_mismatch").await;
    let res = app.delete_authed(&path, &owner.access_token).await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app.get_authed(&path, &owner.access_token).await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let mine: Value = app
        .get_authed("/v1/orgs", &owner.access_token)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(mine["items"], json!([]));

    let actions = app.audit_actions(owner.id).await;
    for action in ["org.created", "org.updated", "org.deleted"] {
        assert!(actions.iter().any(|a| a == action), "{actions:?}");
    }
}

async fn slugs_are_unique_among_live_rows_case_insensitively(app: TestApp) {
    let a = app.user("a").await;
    let b = app.user("b").await;
    let org = app.create_org(&a, "taken").await;
    let res = app
        .post_authed(
            "/v1/orgs",
            &b.access_token,
            &json!({"name": "x", "slug": "TAKEN"}),
        )
        .await;
    assert_problem(res, StatusCode::CONFLICT, "slug_taken").await;
    let res = app
        .post_authed(
            "/v1/orgs",
            &b.access_token,
            &json!({"name": "x", "slug": "not a slug"}),
        )
        .await;
    let body = assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    assert_eq!(body["errors"][0]["field"], "slug");
    // Account slugs are per organization; project slugs per account.
    let acct = app.create_account(&a, org, "main").await;
    let res = app
        .post_authed(
            &format!("/v1/orgs/{org}/accounts"),
            &a.access_token,
            &json!({"name": "x", "slug": "Main"}),
        )
        .await;
    assert_problem(res, StatusCode::CONFLICT, "slug_taken").await;
    let other = app.create_org(&b, "other").await;
    app.create_account(&b, other, "main").await;
    app.create_project(&a, org, acct, "web").await;
    let acct2 = app.create_account(&a, org, "second").await;
    app.create_project(&a, org, acct2, "web").await;
    // A deleted organization's slug is free again.
    assert_eq!(
        app.delete_authed(&format!("/v1/orgs/{org}"), &a.access_token)
            .await
            .status(),
        StatusCode::NO_CONTENT
    );
    app.create_org(&b, "taken").await;
}

async fn accounts_and_projects_under_an_organization(app: TestApp) {
    let owner = app.user("owner").await;
    let org = app.create_org(&owner, "acme").await;
    let acct = app.create_account(&owner, org, "main").await;
    let proj = app.create_project(&owner, org, acct, "web").await;
    let t = &owner.access_token;

    let body: Value = app
        .get_authed(
            &format!("/v1/orgs/{org}/accounts/{acct}/projects/{proj}"),
            t,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["account_id"], acct.to_string());
    assert_eq!(body["organization_id"], org.to_string());

    let res = app
        .client
        .patch(app.url(&format!("/v1/orgs/{org}/accounts/{acct}/projects/{proj}")))
        .bearer_auth(t)
        .header("If-Match", "\"1\"")
        .json(&json!({"slug": "website"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["etag"], "\"2\"");

    // A project reached through the wrong account is not there.
    let acct2 = app.create_account(&owner, org, "second").await;
    let res = app
        .get_authed(
            &format!("/v1/orgs/{org}/accounts/{acct2}/projects/{proj}"),
            t,
        )
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;

    let res = app
        .delete_authed(
            &format!("/v1/orgs/{org}/accounts/{acct}/projects/{proj}"),
            t,
        )
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = app
        .get_authed(
            &format!("/v1/orgs/{org}/accounts/{acct}/projects/{proj}"),
            t,
        )
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    // Its slug is free again.
    app.create_project(&owner, org, acct, "website").await;
}

async fn deleting_an_account_hides_everything_below_it(app: TestApp) {
    let owner = app.user("owner").await;
    let org = app.create_org(&owner, "acme").await;
    let acct = app.create_account(&owner, org, "main").await;
    let proj = app.create_project(&owner, org, acct, "web").await;
    let t = &owner.access_token;
    let res = app
        .delete_authed(&format!("/v1/orgs/{org}/accounts/{acct}"), t)
        .await;
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    for path in [
        format!("/v1/orgs/{org}/accounts/{acct}"),
        format!("/v1/orgs/{org}/accounts/{acct}/projects"),
        format!("/v1/orgs/{org}/accounts/{acct}/projects/{proj}"),
    ] {
        assert_problem(
            app.get_authed(&path, t).await,
            StatusCode::NOT_FOUND,
            "not_found",
        )
        .await;
    }
    let res = app
        .post_authed(
            &format!("/v1/orgs/{org}/accounts/{acct}/projects"),
            t,
            &json!({"name": "x", "slug": "x"}),
        )
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    let list: Value = app
        .get_authed(&format!("/v1/orgs/{org}/accounts"), t)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["items"], json!([]));
}

async fn outsiders_get_404_for_everything_under_an_organization(app: TestApp) {
    let owner = app.user("owner").await;
    let outsider = app.user("outsider").await;
    let org = app.create_org(&owner, "acme").await;
    let acct = app.create_account(&owner, org, "main").await;
    let proj = app.create_project(&owner, org, acct, "web").await;
    let base = format!("/v1/orgs/{org}");
    let cases: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, base.clone(), None),
        (
            Method::PATCH,
            base.clone(),
            Some(json!({"name": "x", "version": 1})),
        ),
        (Method::DELETE, base.clone(), None),
        (Method::GET, format!("{base}/accounts"), None),
        (
            Method::POST,
            format!("{base}/accounts"),
            Some(json!({"name": "x", "slug": "x"})),
        ),
        (Method::GET, format!("{base}/accounts/{acct}"), None),
        (Method::DELETE, format!("{base}/accounts/{acct}"), None),
        (
            Method::GET,
            format!("{base}/accounts/{acct}/projects"),
            None,
        ),
        (
            Method::GET,
            format!("{base}/accounts/{acct}/projects/{proj}"),
            None,
        ),
        (
            Method::DELETE,
            format!("{base}/accounts/{acct}/projects/{proj}"),
            None,
        ),
    ];
    for (method, path, body) in cases {
        let res = app
            .call(method.clone(), &path, &outsider.access_token, body.as_ref())
            .await;
        assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
    }
    // Unknown ids look the same as foreign ones.
    let res = app
        .get_authed(&format!("/v1/orgs/{}", Uuid::now_v7()), &owner.access_token)
        .await;
    assert_problem(res, StatusCode::NOT_FOUND, "not_found").await;
}

async fn lists_are_paginated_and_filtered(app: TestApp) {
    let owner = app.user("owner").await;
    let org = app.create_org(&owner, "acme").await;
    for i in 0..5 {
        app.create_account(&owner, org, &format!("team-{i}")).await;
    }
    app.create_account(&owner, org, "other").await;
    let t = &owner.access_token;
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/v1/orgs/{org}/accounts?limit=2&slug_prefix=TEAM");
        if let Some(c) = &cursor {
            path.push_str(&format!("&cursor={c}"));
        }
        let page: Value = app.get_authed(&path, t).await.json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            seen.push(item["slug"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, ["team-0", "team-1", "team-2", "team-3", "team-4"]);
    let page: Value = app
        .get_authed(&format!("/v1/orgs/{org}/accounts?name_prefix=oth"), t)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    // `%` is a character, not a wildcard.
    let page: Value = app
        .get_authed(&format!("/v1/orgs/{org}/accounts?slug_prefix=%25"), t)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["items"], json!([]));
    // U+0000 can start no name (and PostgreSQL cannot compare it): 422 on both databases.
    let res = app
        .get_authed(&format!("/v1/orgs/{org}/accounts?name_prefix=a%00b"), t)
        .await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let res = app
        .get_authed(&format!("/v1/orgs/{org}/accounts?limit=0"), t)
        .await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
    let res = app
        .get_authed(&format!("/v1/orgs/{org}/accounts?cursor=nope"), t)
        .await;
    assert_problem(res, StatusCode::UNPROCESSABLE_ENTITY, "validation_failed").await;
}

async fn the_database_refuses_cross_tenant_rows(app: TestApp) {
    use sea_orm::{ActiveModelTrait, Set};
    let a = app.user("a").await;
    let b = app.user("b").await;
    let org_a = app.create_org(&a, "org-a").await;
    let org_b = app.create_org(&b, "org-b").await;
    let acct_b = app.create_account(&b, org_b, "main").await;
    let now = chrono::Utc::now();
    let project = entity::projects::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(org_a),
        account_id: Set(acct_b),
        slug: Set("sneaky".into()),
        name: Set("sneaky".into()),
        version: Set(1),
        created_at: Set(now),
        updated_at: Set(now),
        deleted_at: Set(None),
    };
    assert!(
        project.insert(&app.ctx.db).await.is_err(),
        "a project of organization A under B's account"
    );
    // A grant at another organization's account.
    let membership: entity::memberships::Model = {
        use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
        entity::memberships::Entity::find()
            .filter(entity::memberships::Column::OrganizationId.eq(org_a))
            .one(&app.ctx.db)
            .await
            .unwrap()
            .unwrap()
    };
    let grant = entity::role_assignments::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(org_a),
        membership_id: Set(membership.id),
        role_id: Set(migration::builtin_role_id("viewer")),
        scope_type: Set("account".into()),
        scope_id: Set(acct_b),
        account_id: Set(Some(acct_b)),
        project_id: Set(None),
        granted_by: Set(None),
        created_at: Set(now),
    };
    assert!(
        grant.insert(&app.ctx.db).await.is_err(),
        "a grant at B's account in A"
    );
    // Scope columns that disagree.
    let grant = entity::role_assignments::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(org_a),
        membership_id: Set(membership.id),
        role_id: Set(migration::builtin_role_id("viewer")),
        scope_type: Set("organization".into()),
        scope_id: Set(org_b),
        account_id: Set(None),
        project_id: Set(None),
        granted_by: Set(None),
        created_at: Set(now),
    };
    assert!(
        grant.insert(&app.ctx.db).await.is_err(),
        "an organization scope of another org"
    );
}
