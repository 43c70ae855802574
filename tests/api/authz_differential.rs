//! The fast path against the oracle: what the server decides (per-organization enforcers, answers
//! remembered per organization and version) must be what one plain Casbin `Enforcer` over every
//! organization's lines decides, for random questions over a few hundred random tenants with
//! hierarchy, custom roles, deleted accounts and projects, removed members and disabled users;
//! then again after changes, which the server must not answer from what it remembered before.

use chrono::Utc;
use entity::{accounts, memberships, organizations, projects, role_assignments, roles, users};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect, Set};
use service::authz::{build_enforcer, enforce, Permission, Scope, SeaOrmAdapter};
use uuid::Uuid;

use crate::both_backends;
use crate::helpers::TestApp;

both_backends!(the_fast_path_decides_as_a_plain_casbin_enforcer);

const ORGS: usize = 300;
const USERS: usize = 240;
const QUESTIONS: usize = 10_000;

/// xorshift64*: reproducible without a dependency; the seed is printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

struct Tenant {
    id: Uuid,
    /// Every scope, live or deleted.
    scopes: Vec<Scope>,
    roles: Vec<(Uuid, bool, String)>,
    members: Vec<Uuid>,
}

async fn insert_chunks<A, E>(db: &DatabaseConnection, rows: Vec<A>)
where
    A: sea_orm::ActiveModelTrait<Entity = E> + Send,
    E: EntityTrait,
{
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<A> = rows.by_ref().take(300).collect();
        E::insert_many(chunk)
            .exec_without_returning(db)
            .await
            .expect("insert");
    }
}

/// A few hundred random organizations, written straight to the tables.
async fn populate(db: &DatabaseConnection, rng: &mut Rng) -> (Vec<Uuid>, Vec<Tenant>) {
    let now = Utc::now();
    let policy = service::authz::PolicySet::embedded().expect("shipped policy");
    let builtin: Vec<String> = policy.builtin.keys().cloned().collect();
    let user_ids: Vec<Uuid> = (0..USERS).map(|_| Uuid::now_v7()).collect();
    insert_chunks(
        db,
        user_ids
            .iter()
            .enumerate()
            .map(|(i, id)| users::ActiveModel {
                id: Set(*id),
                email: Set(format!("diff{i}@example.com")),
                password_hash: Set("not-a-hash".into()),
                display_name: Set(format!("User {i}")),
                status: Set(if i % 20 == 7 {
                    users::UserStatus::Disabled
                } else {
                    users::UserStatus::Active
                }),
                email_verified_at: Set(None),
                mfa_enabled: Set(false),
                failed_login_count: Set(0),
                locked_until: Set(None),
                last_login_at: Set(None),
                metadata: Set(serde_json::json!({})),
                version: Set(1),
                created_at: Set(now),
                updated_at: Set(now),
                deleted_at: Set(None),
            })
            .collect(),
    )
    .await;

    let (mut orgs, mut accs, mut projs, mut custom, mut members, mut grants) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let mut tenants = Vec::new();
    for o in 0..ORGS {
        let org = Uuid::now_v7();
        orgs.push(organizations::ActiveModel {
            id: Set(org),
            slug: Set(format!("diff-{o}")),
            name: Set(format!("Org {o}")),
            version: Set(1),
            authz_version: Set(1),
            require_mfa: Set(false),
            created_at: Set(now),
            updated_at: Set(now),
            deleted_at: Set(None),
        });
        let mut scopes = vec![Scope::organization(org)];
        for a in 0..3 {
            let account = Uuid::now_v7();
            let account_deleted = rng.chance(10);
            accs.push(accounts::ActiveModel {
                id: Set(account),
                organization_id: Set(org),
                slug: Set(format!("a{a}")),
                name: Set(format!("Account {a}")),
                version: Set(1),
                created_at: Set(now),
                updated_at: Set(now),
                deleted_at: Set(account_deleted.then_some(now)),
            });
            scopes.push(Scope::account(org, account));
            for p in 0..2 {
                let project = Uuid::now_v7();
                projs.push(projects::ActiveModel {
                    id: Set(project),
                    organization_id: Set(org),
                    account_id: Set(account),
                    slug: Set(format!("p{p}")),
                    name: Set(format!("Project {p}")),
                    version: Set(1),
                    created_at: Set(now),
                    updated_at: Set(now),
                    deleted_at: Set(rng.chance(10).then_some(now)),
                });
                scopes.push(Scope::project(org, account, project));
            }
        }
        let mut roles_here: Vec<(Uuid, bool, String)> = builtin
            .iter()
            .map(|name| (migration::builtin_role_id(name), true, name.clone()))
            .collect();
        for r in 0..rng.below(3) {
            let id = Uuid::now_v7();
            let perms: Vec<&str> = (0..1 + rng.below(4))
                .map(|_| rng.pick(&Permission::ALL).as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            custom.push(roles::ActiveModel {
                id: Set(id),
                organization_id: Set(Some(org)),
                name: Set(format!("custom-{r}")),
                description: Set(None),
                builtin: Set(false),
                permissions: Set(Some(serde_json::json!(perms))),
                version: Set(1),
                created_at: Set(now),
                updated_at: Set(now),
            });
            roles_here.push((id, false, format!("custom-{r}")));
        }
        let mut members_here = Vec::new();
        for _ in 0..3 + rng.below(6) {
            let user = *rng.pick(&user_ids);
            if members_here.contains(&user) {
                continue;
            }
            members_here.push(user);
            let membership = Uuid::now_v7();
            members.push(memberships::ActiveModel {
                id: Set(membership),
                organization_id: Set(org),
                user_id: Set(user),
                created_at: Set(now),
            });
            for _ in 0..1 + rng.below(2) {
                let scope = *rng.pick(&scopes);
                let (role, _, _) = rng.pick(&roles_here).clone();
                grants.push(role_assignments::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    organization_id: Set(org),
                    membership_id: Set(membership),
                    role_id: Set(role),
                    scope_type: Set(scope.scope_type().as_str().into()),
                    scope_id: Set(scope.id()),
                    // The row names its own level only (a check constraint).
                    account_id: Set(scope.account_id.filter(|_| scope.project_id.is_none())),
                    project_id: Set(scope.project_id),
                    granted_by: Set(None),
                    created_at: Set(now),
                });
            }
        }
        tenants.push(Tenant {
            id: org,
            scopes,
            roles: roles_here,
            members: members_here,
        });
    }
    insert_chunks(db, orgs).await;
    insert_chunks(db, accs).await;
    insert_chunks(db, projs).await;
    insert_chunks(db, custom).await;
    insert_chunks(db, members).await;
    // The same (membership, role, scope) drawn twice is one grant.
    let mut seen = std::collections::BTreeSet::new();
    grants.retain(|g| {
        seen.insert((
            g.membership_id.clone().unwrap(),
            g.role_id.clone().unwrap(),
            g.scope_id.clone().unwrap(),
        ))
    });
    insert_chunks(db, grants).await;
    (user_ids, tenants)
}

async fn version(db: &DatabaseConnection, org: Uuid) -> i64 {
    organizations::Entity::find_by_id(org)
        .select_only()
        .column(organizations::Column::AuthzVersion)
        .into_tuple()
        .one(db)
        .await
        .expect("read")
        .expect("organization")
}

/// Asks both engines `QUESTIONS` random questions; returns how many were allowed.
async fn compare(app: &TestApp, rng: &mut Rng, users: &[Uuid], tenants: &[Tenant]) -> usize {
    let db = &app.ctx.db;
    let policy = app.ctx.authz.policy();
    let oracle = build_enforcer(
        &policy,
        SeaOrmAdapter::all_organizations(db.clone(), policy.clone()),
    )
    .await
    .expect("oracle");
    let mut versions = std::collections::HashMap::new();
    let mut allowed = 0;
    for i in 0..QUESTIONS {
        let tenant = rng.pick(tenants);
        // Mostly members of the tenant (the interesting answers), sometimes anyone.
        let user = if rng.chance(80) && !tenant.members.is_empty() {
            *rng.pick(&tenant.members)
        } else {
            *rng.pick(users)
        };
        let scope = *rng.pick(&tenant.scopes);
        let permission = *rng.pick(&Permission::ALL);
        let v = match versions.get(&tenant.id) {
            Some(v) => *v,
            None => {
                let v = version(db, tenant.id).await;
                versions.insert(tenant.id, v);
                v
            }
        };
        let fast = app
            .ctx
            .authz
            .decide(db, v, user, &scope, permission)
            .await
            .expect("fast path");
        let expected = enforce(&oracle, user, &scope, permission).expect("oracle");
        assert_eq!(
            fast, expected,
            "question {i}: user {user} {permission} at {scope:?}: fast path {fast}, plain enforcer {expected}"
        );
        allowed += usize::from(expected);
    }
    allowed
}

async fn the_fast_path_decides_as_a_plain_casbin_enforcer(app: TestApp) {
    let seed = 0x7E55_E4A0 ^ Utc::now().timestamp_micros() as u64;
    println!("seed {seed:#x}");
    let mut rng = Rng(seed | 1);
    let db = &app.ctx.db;
    let (users, tenants) = populate(db, &mut rng).await;

    // Twice: the second round is answered mostly from what the first remembered.
    for round in 0..2 {
        let allowed = compare(&app, &mut rng.clone_state(), &users, &tenants).await;
        assert!(
            allowed > QUESTIONS / 20 && allowed < QUESTIONS * 19 / 20,
            "round {round}: {allowed} of {QUESTIONS} allowed: the population should give both answers"
        );
    }
    assert!(
        app.ctx.authz.decisions().answers() > 0,
        "answers are remembered"
    );

    // Changes: members removed (their grants go with them), custom roles edited, accounts
    // deleted, each organization's authz_version bumped as the service does.
    let now = Utc::now();
    for tenant in tenants.iter().filter(|_| rng.chance(40)) {
        if let Some(user) = tenant.members.first().copied() {
            memberships::Entity::delete_many()
                .filter(memberships::Column::OrganizationId.eq(tenant.id))
                .filter(memberships::Column::UserId.eq(user))
                .exec(db)
                .await
                .expect("remove member");
        }
        if let Some((role, _, _)) = tenant.roles.iter().find(|(_, builtin, _)| !builtin) {
            roles::Entity::update_many()
                .col_expr(
                    roles::Column::Permissions,
                    Expr::value(serde_json::json!(["project:read", "authz:check"])),
                )
                .filter(roles::Column::Id.eq(*role))
                .exec(db)
                .await
                .expect("edit role");
        }
        if let Some(account) = tenant.scopes.iter().find_map(|s| s.account_id) {
            accounts::Entity::update_many()
                .col_expr(accounts::Column::DeletedAt, Expr::value(now))
                .filter(accounts::Column::Id.eq(account))
                .exec(db)
                .await
                .expect("delete account");
        }
        organizations::Entity::update_many()
            .col_expr(
                organizations::Column::AuthzVersion,
                Expr::col(organizations::Column::AuthzVersion).add(1),
            )
            .filter(organizations::Column::Id.eq(tenant.id))
            .exec(db)
            .await
            .expect("bump");
    }
    compare(&app, &mut rng, &users, &tenants).await;
}

impl Rng {
    fn clone_state(&self) -> Rng {
        Rng(self.0)
    }
}
