//! `policy.dir`: a server started on an author's policy directory decides with it, and refuses
//! to start on one that does not lint.

use std::path::Path;

use chrono::Utc;
use reqwest::StatusCode;
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, QueryFilter, Set};
use uuid::Uuid;

use crate::helpers::{Backend, TestApp, TestDb};

fn shipped() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies")
}

/// A copy of the shipped `model.conf` and `policy.csv` with `edit` applied to the CSV.
fn policy_copy(edit: impl Fn(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let read = |name: &str| std::fs::read_to_string(shipped().join(name)).expect("shipped file");
    std::fs::write(dir.path().join("model.conf"), read("model.conf")).expect("write model");
    std::fs::write(dir.path().join("policy.csv"), edit(read("policy.csv"))).expect("write csv");
    dir
}

/// Makes `user_id` a member of `org` with `role` at the organization, the way the role
/// assignment service will (a membership, an assignment, the organization's authz_version
/// bumped so enforcers are rebuilt).
async fn grant_at_organization(app: &TestApp, org: Uuid, user_id: Uuid, role: &str) {
    use entity::{memberships, organizations, role_assignments};
    let now = Utc::now();
    let membership = memberships::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(org),
        user_id: Set(user_id),
        created_at: Set(now),
    }
    .insert(&app.ctx.db)
    .await
    .expect("membership");
    role_assignments::ActiveModel {
        id: Set(Uuid::now_v7()),
        organization_id: Set(org),
        membership_id: Set(membership.id),
        role_id: Set(migration::builtin_role_id(role)),
        scope_type: Set("organization".into()),
        scope_id: Set(org),
        account_id: Set(None),
        project_id: Set(None),
        granted_by: Set(None),
        created_at: Set(now),
    }
    .insert(&app.ctx.db)
    .await
    .expect("role assignment");
    organizations::Entity::update_many()
        .col_expr(
            organizations::Column::AuthzVersion,
            Expr::col(organizations::Column::AuthzVersion).add(1),
        )
        .filter(organizations::Column::Id.eq(org))
        .exec(&app.ctx.db)
        .await
        .expect("bump authz_version");
}

/// An organization with an account, and a second user granted `viewer` at the organization:
/// what that viewer gets when reading the account.
async fn viewer_reads_an_account(app: &TestApp) -> StatusCode {
    let owner = app.user("owner").await;
    let viewer = app.user("viewer").await;
    let org = app.create_org(&owner, "acme").await;
    let account = app.create_account(&owner, org, "north").await;
    grant_at_organization(app, org, viewer.id, "viewer").await;
    let res = app
        .get_authed(&format!("/v1/orgs/{org}"), &viewer.access_token)
        .await;
    assert_eq!(
        res.status(),
        StatusCode::OK,
        "a viewer reads the organization"
    );
    app.get_authed(
        &format!("/v1/orgs/{org}/accounts/{account}"),
        &viewer.access_token,
    )
    .await
    .status()
}

async fn a_policy_dir_decides_instead_of_the_shipped_files(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    assert_eq!(viewer_reads_an_account(&app).await, StatusCode::OK);

    let dir = policy_copy(|csv| csv.replace("p, viewer, *, account:read\n", ""));
    let path = dir.path().to_owned();
    let Some(app) = TestApp::spawn_with(backend, move |s| s.policy.dir = Some(path)).await else {
        return;
    };
    // What the viewer may not read is not there for them.
    assert_eq!(viewer_reads_an_account(&app).await, StatusCode::NOT_FOUND);
}

mod a_policy_dir_decides_instead_of_the_shipped_files {
    use crate::helpers::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite() {
        super::a_policy_dir_decides_instead_of_the_shipped_files(Backend::Sqlite).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres() {
        super::a_policy_dir_decides_instead_of_the_shipped_files(Backend::Postgres).await;
    }
}

/// The error and every cause below it, as `tessera serve` prints them.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push('\n');
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_refuses_to_start_on_a_policy_dir_that_does_not_lint() {
    let dir = policy_copy(|csv| {
        csv.replace("p, viewer, *, role:read\n", "p, viewer, *, role:reed\n")
            .replace(
                "p, member, *, org:read\n",
                "p, member, *, org:read\np, member, *, org:read\n",
            )
    });
    let csv = dir.path().join("policy.csv");
    let text = std::fs::read_to_string(&csv).expect("copy");
    let line = |needle: &str| text.lines().position(|l| l == needle).expect("line") + 1;
    let (bad, dup) = (
        line("p, viewer, *, role:reed"),
        line("p, member, *, org:read") + 1,
    );

    let db = TestDb::create(Backend::Sqlite).await.expect("sqlite");
    let data = tempfile::tempdir().expect("tempdir");
    let mut settings =
        service::config::Settings::for_tests(db.url().to_owned(), data.path().to_owned());
    settings.policy.dir = Some(dir.path().to_owned());
    let Err(err) = api::Application::build(settings).await else {
        panic!("started on a policy that does not lint");
    };
    let message = chain(&err);
    let file = csv.display();
    assert!(
        message.contains(&format!("{file}:{bad}: unknown permission `role:reed`")),
        "{message}"
    );
    assert!(
        message.contains(&format!("{file}:{dup}: duplicate line")),
        "{message}"
    );
}
