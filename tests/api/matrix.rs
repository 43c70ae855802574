//! The cross-tenant matrix: every tenant-scoped operation of `/openapi.json` × personas × own /
//! foreign / missing object, with the expected status derived from the operation's declared
//! `x-required-permission`, the built-in roles of the shipped policy and the scope hierarchy. A
//! new endpoint joins by being in the spec; a new kind of path parameter fails loudly until the
//! fixture knows it. Every 2xx body is also checked for ids the persona may not see.

use std::collections::BTreeSet;

use reqwest::Method;
use sea_orm::{ActiveModelTrait, ConnectionTrait, Set};
use serde_json::{json, Map, Value};
use service::authz::{Permission, PolicySet};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::{TestApp, TestUser};

both_backends!(every_tenant_scoped_operation_by_persona_and_object);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Persona {
    Owner,
    Admin,
    Member,
    Viewer,
    /// `admin`, but only at the sibling account B.
    Sibling,
    Outsider,
    /// Owner of another organization.
    OtherOwner,
}

const PERSONAS: [Persona; 7] = [
    Persona::Viewer,
    Persona::Member,
    Persona::Sibling,
    Persona::Outsider,
    Persona::OtherOwner,
    Persona::Admin,
    Persona::Owner,
];

struct Users {
    owner: TestUser,
    admin: TestUser,
    member: TestUser,
    viewer: TestUser,
    sibling: TestUser,
    outsider: TestUser,
    other_owner: TestUser,
    /// A plain member (viewer) whom operations on members / assignments target.
    target: TestUser,
    /// A member of the other organization.
    other_target: TestUser,
}

impl Users {
    fn of(&self, p: Persona) -> &TestUser {
        match p {
            Persona::Owner => &self.owner,
            Persona::Admin => &self.admin,
            Persona::Member => &self.member,
            Persona::Viewer => &self.viewer,
            Persona::Sibling => &self.sibling,
            Persona::Outsider => &self.outsider,
            Persona::OtherOwner => &self.other_owner,
        }
    }
}

/// One organization's objects of every kind a path can name.
#[derive(Debug, Clone, Copy)]
struct Objects {
    org: Uuid,
    account: Uuid,
    project: Uuid,
    role: Uuid,
    assignment: Uuid,
    invitation: Uuid,
    member: Uuid,
}

#[derive(Debug, Clone, Copy)]
struct Fixture {
    own: Objects,
    /// The sibling account B (and its project), where `Sibling` is admin.
    sibling_account: Uuid,
    foreign: Objects,
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", &Uuid::new_v4().simple().to_string()[..12])
}

async fn grant(app: &TestApp, org: Uuid, user: Uuid, role: &str, scope: (&str, Uuid)) -> Uuid {
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};
    let now = chrono::Utc::now();
    let existing = entity::memberships::Entity::find()
        .filter(entity::memberships::Column::OrganizationId.eq(org))
        .filter(entity::memberships::Column::UserId.eq(user))
        .one(&app.ctx.db)
        .await
        .unwrap();
    let membership = match existing {
        Some(m) => m.id,
        None => {
            let id = Uuid::now_v7();
            entity::memberships::ActiveModel {
                id: Set(id),
                organization_id: Set(org),
                user_id: Set(user),
                created_at: Set(now),
            }
            .insert(&app.ctx.db)
            .await
            .unwrap();
            id
        }
    };
    let role_id = if role.len() == 36 {
        role.parse().unwrap()
    } else {
        migration::builtin_role_id(role)
    };
    let id = Uuid::now_v7();
    entity::role_assignments::ActiveModel {
        id: Set(id),
        organization_id: Set(org),
        membership_id: Set(membership),
        role_id: Set(role_id),
        scope_type: Set(scope.0.into()),
        scope_id: Set(scope.1),
        account_id: Set((scope.0 == "account").then_some(scope.1)),
        project_id: Set((scope.0 == "project").then_some(scope.1)),
        granted_by: Set(None),
        created_at: Set(now),
    }
    .insert(&app.ctx.db)
    .await
    .unwrap();
    bump(app, org).await;
    id
}

async fn bump(app: &TestApp, org: Uuid) {
    app.ctx
        .db
        .execute_raw(sea_orm::Statement::from_sql_and_values(
            app.ctx.db.get_database_backend(),
            "UPDATE organizations SET authz_version = authz_version + 1 WHERE id = $1",
            [org.into()],
        ))
        .await
        .unwrap();
}

async fn objects(app: &TestApp, owner: &TestUser, target: &TestUser) -> (Objects, Uuid) {
    let org = app.create_org(owner, &unique("org")).await;
    let account = app.create_account(owner, org, "a").await;
    let project = app.create_project(owner, org, account, "p").await;
    let sibling = app.create_account(owner, org, "b").await;
    app.create_project(owner, org, sibling, "q").await;
    let now = chrono::Utc::now();
    let role = Uuid::now_v7();
    entity::roles::ActiveModel {
        id: Set(role),
        organization_id: Set(Some(org)),
        name: Set("auditor".into()),
        description: Set(None),
        builtin: Set(false),
        permissions: Set(Some(json!(["project:read"]))),
        version: Set(1),
        created_at: Set(now),
        updated_at: Set(now),
    }
    .insert(&app.ctx.db)
    .await
    .unwrap();
    let invitation = Uuid::now_v7();
    entity::invitations::ActiveModel {
        id: Set(invitation),
        organization_id: Set(org),
        email: Set(format!("{}@example.com", unique("invitee"))),
        role_id: Set(migration::builtin_role_id("viewer")),
        scope_type: Set("organization".into()),
        scope_id: Set(org),
        account_id: Set(None),
        project_id: Set(None),
        token_hash: Set(Uuid::new_v4().simple().to_string()),
        invited_by: Set(Some(owner.id)),
        expires_at: Set(now + chrono::Duration::days(1)),
        accepted_at: Set(None),
        accepted_by: Set(None),
        revoked_at: Set(None),
        created_at: Set(now),
    }
    .insert(&app.ctx.db)
    .await
    .unwrap();
    let assignment = grant(app, org, target.id, "viewer", ("organization", org)).await;
    (
        Objects {
            org,
            account,
            project,
            role,
            assignment,
            invitation,
            member: target.id,
        },
        sibling,
    )
}

async fn fixture(app: &TestApp, u: &Users) -> Fixture {
    let (own, sibling_account) = objects(app, &u.owner, &u.target).await;
    let org = own.org;
    grant(app, org, u.admin.id, "admin", ("organization", org)).await;
    grant(app, org, u.member.id, "member", ("organization", org)).await;
    grant(app, org, u.viewer.id, "viewer", ("organization", org)).await;
    grant(
        app,
        org,
        u.sibling.id,
        "admin",
        ("account", sibling_account),
    )
    .await;
    let (foreign, _) = objects(app, &u.other_owner, &u.other_target).await;
    Fixture {
        own,
        sibling_account,
        foreign,
    }
}

/// What kind of object a path parameter names, from the segment before it.
fn kind_of(segment: &str) -> &'static str {
    match segment {
        "orgs" => "org",
        "accounts" => "account",
        "projects" => "project",
        "roles" => "role",
        "role-assignments" => "assignment",
        "invitations" => "invitation",
        "members" => "member",
        other => panic!("matrix: teach the fixture about objects under `{other}`"),
    }
}

fn id_of(o: &Objects, kind: &str) -> Uuid {
    match kind {
        "org" => o.org,
        "account" => o.account,
        "project" => o.project,
        "role" => o.role,
        "assignment" => o.assignment,
        "invitation" => o.invitation,
        "member" => o.member,
        _ => unreachable!(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Own,
    /// The deepest object is another organization's (under this organization's path).
    Foreign,
    Missing,
}

/// The concrete path, and the kind of its deepest object.
fn fill(template: &str, fx: &Fixture, variant: Variant) -> (String, &'static str) {
    let segments: Vec<&str> = template.trim_start_matches('/').split('/').collect();
    let params: Vec<usize> = (0..segments.len())
        .filter(|i| segments[*i].starts_with('{'))
        .collect();
    let last = *params.last().expect("tenant paths have parameters");
    let mut out = String::new();
    let mut deepest = "org";
    for (i, seg) in segments.iter().enumerate() {
        out.push('/');
        if seg.starts_with('{') {
            let kind = kind_of(segments[i - 1]);
            let id = match variant {
                Variant::Foreign if i == last => id_of(&fx.foreign, kind),
                Variant::Missing if i == last => Uuid::now_v7(),
                _ => id_of(&fx.own, kind),
            };
            out.push_str(&id.to_string());
            deepest = kind;
        } else {
            out.push_str(seg);
        }
    }
    (out, deepest)
}

/// A body of the operation's request schema: required properties by name, so it passes the
/// shape checks and the authorization decides.
fn body_for(doc: &Value, op: &Value, fx: &Fixture, u: &Users, method: &Method) -> Option<Value> {
    let schema = op["requestBody"]["content"]["application/json"]["schema"].clone();
    if schema.is_null() {
        return None;
    }
    let schema = resolve(doc, &schema);
    let mut body = Map::new();
    let required: BTreeSet<String> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect();
    for (name, prop) in schema["properties"].as_object().into_iter().flatten() {
        let wanted = required.contains(name) || (*method == Method::PATCH && name == "name");
        if !wanted {
            continue;
        }
        let prop = resolve(doc, prop);
        let value = match name.as_str() {
            "name" if *method == Method::PATCH => json!("renamed"),
            "name" => json!(unique("n")),
            "slug" => json!(unique("s")),
            "email" => json!(format!("{}@example.com", unique("new"))),
            "user_id" => json!(u.target.id),
            "role_id" => json!(fx.own.role),
            "scope" => json!({"type": "organization", "id": fx.own.org}),
            "permissions" => json!(["project:read"]),
            "token" => json!("x"),
            _ => match prop["type"].as_str() {
                Some("integer") => json!(1),
                Some("boolean") => json!(false),
                Some("array") => json!([]),
                _ => json!("x"),
            },
        };
        body.insert(name.clone(), value);
    }
    Some(Value::Object(body))
}

fn resolve(doc: &Value, schema: &Value) -> Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let name = r.trim_start_matches("#/components/schemas/");
            resolve(doc, &doc["components"]["schemas"][name])
        }
        None => schema.clone(),
    }
}

/// Whether `persona` holds `permission` at the object of `kind` in the fixture.
fn holds(policy: &PolicySet, p: Persona, permission: Permission, kind: &str) -> bool {
    let role = match p {
        Persona::Owner => "owner",
        Persona::Admin => "admin",
        Persona::Member => "member",
        Persona::Viewer => "viewer",
        // Admin at account B only: nothing at the organization, account A or project P.
        Persona::Sibling => {
            return permission == Permission::OrgRead && kind != "account" && kind != "project"
        }
        Persona::Outsider | Persona::OtherOwner => return false,
    };
    permission == Permission::OrgRead || policy.builtin[role].contains(&permission)
}

/// What a member must hold to see an object of `kind` at all (without it: 404).
fn read_permission(kind: &str) -> Permission {
    match kind {
        "account" => Permission::AccountRead,
        "project" => Permission::ProjectRead,
        "role" | "assignment" => Permission::RoleRead,
        "invitation" | "member" => Permission::MemberRead,
        _ => Permission::OrgRead,
    }
}

fn is_member(p: Persona) -> bool {
    !matches!(p, Persona::Outsider | Persona::OtherOwner)
}

/// The statuses `persona` may get for the operation on its own organization's object.
fn expected_own(
    policy: &PolicySet,
    p: Persona,
    method: &Method,
    template: &str,
    permission: Permission,
    deepest: &str,
) -> &'static [u16] {
    const OK: &[u16] = &[200, 201, 204];
    if !is_member(p) {
        return &[404];
    }
    let collection = !template.ends_with('}');
    // The object a collection operation acts on is its parent.
    let kind = deepest;
    if holds(policy, p, permission, kind) {
        return OK;
    }
    if collection && *method == Method::GET {
        // Lists filtered to what the caller may read answer 200 to every member who may read
        // the parent; the leak check below looks at what they hold.
        let filtered = template.ends_with("/accounts") || template.ends_with("/role-assignments");
        if filtered {
            return &[200];
        }
        if template.ends_with("/projects") {
            return if holds(policy, p, Permission::AccountRead, "account") {
                &[200]
            } else {
                &[404]
            };
        }
    }
    // Member removing themself is leaving; not a case of this matrix (targets are others).
    let readable = holds(policy, p, read_permission(kind), kind);
    if readable {
        &[403]
    } else {
        &[404]
    }
}

async fn users(app: &TestApp) -> Users {
    Users {
        owner: app.user("owner").await,
        admin: app.user("admin").await,
        member: app.user("member").await,
        viewer: app.user("viewer").await,
        sibling: app.user("sibling").await,
        outsider: app.user("outsider").await,
        other_owner: app.user("other-owner").await,
        target: app.user("target").await,
        other_target: app.user("other-target").await,
    }
}

fn ids_hidden_from(p: Persona, fx: &Fixture) -> Vec<Uuid> {
    let f = fx.foreign;
    let mut hidden = vec![
        f.org,
        f.account,
        f.project,
        f.role,
        f.assignment,
        f.invitation,
    ];
    if p == Persona::Sibling {
        hidden.extend([fx.own.account, fx.own.project]);
    }
    hidden
}

async fn call(
    app: &TestApp,
    user: &TestUser,
    method: &Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, String) {
    let mut req = app
        .client
        .request(method.clone(), app.url(path))
        .bearer_auth(&user.access_token);
    if *method == Method::PATCH || *method == Method::DELETE {
        req = req.header("If-Match", "*");
    }
    if let Some(body) = body {
        req = req.json(body);
    }
    let res = req.send().await.expect("request");
    let status = res.status().as_u16();
    (status, res.text().await.unwrap_or_default())
}

async fn every_tenant_scoped_operation_by_persona_and_object(app: TestApp) {
    let doc = serde_json::to_value(api::openapi::build()).unwrap();
    let policy = PolicySet::embedded().unwrap();
    let u = users(&app).await;
    let shared = fixture(&app, &u).await;
    let mut failures = Vec::new();
    let mut cases = 0;
    for (template, item) in doc["paths"].as_object().unwrap() {
        if !template.starts_with("/v1/orgs/{org_id}") {
            continue;
        }
        for (method, op) in item.as_object().unwrap() {
            let method: Method = method.to_uppercase().parse().unwrap();
            let permission: Permission = op["x-required-permission"]
                .as_str()
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("{method} {template}: no permission"));
            let mutating = method != Method::GET;
            for variant in [Variant::Missing, Variant::Foreign, Variant::Own] {
                for persona in PERSONAS {
                    let (path, deepest) = fill(template, &shared, variant);
                    if variant == Variant::Foreign
                        && deepest == "org"
                        && persona == Persona::OtherOwner
                    {
                        // That "foreign" organization is this persona's own.
                        continue;
                    }
                    let expected: &[u16] = match variant {
                        Variant::Own => {
                            expected_own(&policy, persona, &method, template, permission, deepest)
                        }
                        _ => &[404],
                    };
                    let allowed = expected.iter().any(|s| *s < 300);
                    // A change that succeeds gets a fixture of its own, so it cannot disturb
                    // the cases after it.
                    let fx = if allowed && mutating {
                        fixture(&app, &u).await
                    } else {
                        shared
                    };
                    let (path, _) = if allowed && mutating {
                        fill(template, &fx, variant)
                    } else {
                        (path, deepest)
                    };
                    let body = body_for(&doc, op, &fx, &u, &method);
                    let user = u.of(persona);
                    let (status, text) = call(&app, user, &method, &path, body.as_ref()).await;
                    cases += 1;
                    if !expected.contains(&status) {
                        failures.push(format!(
                            "{method} {template} as {persona:?} on {variant:?}: got {status}, expected {expected:?}: {text}"
                        ));
                    }
                    if (200..300).contains(&status) {
                        for hidden in ids_hidden_from(persona, &fx) {
                            if text.contains(&hidden.to_string()) {
                                failures.push(format!(
                                    "{method} {template} as {persona:?}: LEAK of {hidden} in {text}"
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    assert!(cases > 100, "{cases} cases");
    assert!(
        failures.is_empty(),
        "{} of {cases} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    let _ = shared.sibling_account;
}
