//! Authorization: the permission vocabulary, scopes, the policy files and the one place that
//! asks Casbin. Every tenant-scoped decision goes through [`Authz::decide`].

mod adapter;
pub mod decisions;
pub mod policy;
pub mod policy_test;
pub mod questions;
mod vocabulary;

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

use casbin::Enforcer;
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, QuerySelect};
use uuid::Uuid;

pub use adapter::{FixedAdapter, SeaOrmAdapter};
pub use decisions::{build_enforcer, enforce, matching_lines, Decisions, PolicyLines};
pub use policy::{LintMessage, PolicySet};
pub use vocabulary::{Permission, ScopeType};

use crate::error::ServiceResult;

/// A live scope inside an organization, resolved from the database: the organization, and the
/// account and project when the scope is that deep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    pub organization_id: Uuid,
    pub account_id: Option<Uuid>,
    pub project_id: Option<Uuid>,
}

impl Scope {
    pub fn organization(organization_id: Uuid) -> Self {
        Self {
            organization_id,
            account_id: None,
            project_id: None,
        }
    }

    pub fn account(organization_id: Uuid, account_id: Uuid) -> Self {
        Self {
            organization_id,
            account_id: Some(account_id),
            project_id: None,
        }
    }

    pub fn project(organization_id: Uuid, account_id: Uuid, project_id: Uuid) -> Self {
        Self {
            organization_id,
            account_id: Some(account_id),
            project_id: Some(project_id),
        }
    }

    pub fn scope_type(&self) -> ScopeType {
        match (self.account_id, self.project_id) {
            (_, Some(_)) => ScopeType::Project,
            (Some(_), None) => ScopeType::Account,
            (None, None) => ScopeType::Organization,
        }
    }

    /// The id of the deepest level: the organization, account or project.
    pub fn id(&self) -> Uuid {
        self.project_id
            .or(self.account_id)
            .unwrap_or(self.organization_id)
    }

    /// Whether `self` is `other` or lies below it.
    pub fn within(&self, other: &Scope) -> bool {
        self.organization_id == other.organization_id
            && (other.account_id.is_none() || other.account_id == self.account_id)
            && (other.project_id.is_none() || other.project_id == self.project_id)
    }
}

/// Decides with Casbin over the policy files and the organization's rows, through
/// [`Decisions`]: one enforcer per organization, built from its rows at its `authz_version`
/// (bumped by every transaction that changes grants, roles, memberships or scopes), and every
/// answer remembered until that version moves, so every instance decides on committed state.
pub struct Authz {
    decisions: Decisions,
    facts: RwLock<HashMap<Uuid, Arc<OrgFacts>>>,
    /// The newest `authz_version` the change feed reported per organization, so that a load
    /// that read older rows while the change committed is not kept.
    reported: RwLock<HashMap<Uuid, i64>>,
}

/// What the authorization API needs to know of a live organization at one `authz_version`,
/// learnt as it is asked and dropped when the change feed reports a newer version: who is a
/// member and which scopes are live. Members join and leave, and scopes are deleted, only in
/// transactions that bump `authz_version`; a scope created since is looked up on first use.
pub struct OrgFacts {
    pub organization_id: Uuid,
    pub version: i64,
    /// Members must have signed in with a second factor to do anything here.
    pub require_mfa: bool,
    members: RwLock<HashMap<Uuid, bool>>,
    scopes: RwLock<HashMap<Uuid, Scope>>,
    /// Sessions known to have been opened with a second factor (a session's factors never
    /// change).
    mfa_sessions: RwLock<std::collections::HashSet<Uuid>>,
}

/// Past this many organizations known, the least useful half is forgotten (they are read
/// again on their next question).
const FACTS_KEPT: usize = 200_000;

/// Membership answers remembered per organization.
const MEMBERS_KEPT: usize = 65_536;

impl OrgFacts {
    /// Whether a session may act here: any, unless the organization requires a second factor.
    pub async fn session_allowed(
        &self,
        db: &DatabaseConnection,
        session_id: Uuid,
    ) -> ServiceResult<bool> {
        if !self.require_mfa
            || self
                .mfa_sessions
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&session_id)
        {
            return Ok(true);
        }
        let has = crate::mfa::MfaService::session_has_mfa(db, session_id).await?;
        if has {
            self.mfa_sessions
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(session_id);
        }
        Ok(has)
    }

    /// Whether `user_id` is a member.
    pub async fn is_member(&self, db: &DatabaseConnection, user_id: Uuid) -> ServiceResult<bool> {
        if let Some(known) = self
            .members
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&user_id)
        {
            return Ok(*known);
        }
        let member = entity::memberships::Entity::find()
            .filter(entity::memberships::Column::OrganizationId.eq(self.organization_id))
            .filter(entity::memberships::Column::UserId.eq(user_id))
            .one(db)
            .await?
            .is_some();
        let mut members = self.members.write().unwrap_or_else(PoisonError::into_inner);
        // Questions about arbitrary user ids must not grow the map without bound: past the
        // bound, non-members are looked up each time instead of remembered.
        if member || members.len() < MEMBERS_KEPT {
            members.insert(user_id, member);
        }
        Ok(member)
    }

    /// The live scope of this organization named by type and id.
    pub async fn scope(
        &self,
        db: &DatabaseConnection,
        scope_type: ScopeType,
        id: Uuid,
    ) -> ServiceResult<Option<Scope>> {
        if scope_type == ScopeType::Organization {
            return Ok((id == self.organization_id).then(|| Scope::organization(id)));
        }
        if let Some(scope) = self
            .scopes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
        {
            return Ok((scope.scope_type() == scope_type).then_some(*scope));
        }
        let Some(scope) =
            crate::tenancy::live_scope(db, self.organization_id, scope_type, id).await?
        else {
            return Ok(None);
        };
        self.scopes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, scope);
        Ok(Some(scope))
    }
}

impl Authz {
    pub fn new(policy: PolicySet) -> Self {
        Self {
            decisions: Decisions::new(Arc::new(policy)),
            facts: RwLock::new(HashMap::new()),
            reported: RwLock::new(HashMap::new()),
        }
    }

    /// The live organization's facts (`None` if it does not exist or was deleted), read from
    /// the database only when this instance has none current.
    pub async fn facts(
        &self,
        db: &DatabaseConnection,
        organization_id: Uuid,
    ) -> ServiceResult<Option<Arc<OrgFacts>>> {
        if let Some(f) = self
            .facts
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&organization_id)
        {
            return Ok(Some(f.clone()));
        }
        let Some((version, require_mfa)) =
            entity::organizations::Entity::find_by_id(organization_id)
                .filter(entity::organizations::Column::DeletedAt.is_null())
                .select_only()
                .column(entity::organizations::Column::AuthzVersion)
                .column(entity::organizations::Column::RequireMfa)
                .into_tuple::<(i64, bool)>()
                .one(db)
                .await?
        else {
            return Ok(None);
        };
        let facts = Arc::new(OrgFacts {
            organization_id,
            version,
            require_mfa,
            members: RwLock::new(HashMap::new()),
            scopes: RwLock::new(HashMap::new()),
            mfa_sessions: RwLock::new(std::collections::HashSet::new()),
        });
        let reported = self
            .reported
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&organization_id)
            .copied();
        if reported.is_none_or(|r| r <= version) {
            let mut all = self.facts.write().unwrap_or_else(PoisonError::into_inner);
            if all.len() >= FACTS_KEPT {
                let drop: Vec<Uuid> = all.keys().take(FACTS_KEPT / 2).copied().collect();
                for id in drop {
                    all.remove(&id);
                }
            }
            all.insert(organization_id, facts.clone());
        }
        Ok(Some(facts))
    }

    /// The change feed reports that the organization is at `version` now (or was deleted):
    /// everything this instance remembers of it from before is dropped.
    pub fn organization_changed(&self, organization_id: Uuid, version: i64) {
        {
            let mut reported = self
                .reported
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if reported.len() >= FACTS_KEPT {
                reported.clear();
            }
            let seen = reported.entry(organization_id).or_insert(version);
            *seen = (*seen).max(version);
        }
        // Facts at the reported version go too: a deletion reports the version it left.
        let mut facts = self.facts.write().unwrap_or_else(PoisonError::into_inner);
        if facts
            .get(&organization_id)
            .is_some_and(|f| f.version <= version)
        {
            facts.remove(&organization_id);
        }
        drop(facts);
        self.decisions.forget_older(organization_id, version);
    }

    /// Forgets everything remembered of the organization at its current version too (a
    /// member's user was disabled or deleted: the rows changed without a version bump).
    pub fn forget_organization(&self, organization_id: Uuid) {
        self.facts
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&organization_id);
        self.decisions.forget(organization_id);
    }

    /// Decides with `policy` from now on. Questions being answered finish on the old one.
    pub fn replace_policy(&self, policy: PolicySet) {
        self.decisions.replace_policy(Arc::new(policy));
    }

    /// Forgets everything: the change feed lost track (its rows were pruned while this instance
    /// was not reading them).
    pub fn forget_everything(&self) {
        self.facts
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.decisions.replace_policy(self.policy());
    }

    pub fn policy(&self) -> Arc<PolicySet> {
        self.decisions.policy()
    }

    pub fn decisions(&self) -> &Decisions {
        &self.decisions
    }

    /// The organization's enforcer at `version` (for explanations; decisions go through
    /// [`Authz::decide`]).
    pub async fn enforcer(
        &self,
        db: &DatabaseConnection,
        organization_id: Uuid,
        version: i64,
    ) -> ServiceResult<Arc<Enforcer>> {
        self.decisions
            .enforcer(organization_id, version, self.rows(db, organization_id))
            .await
    }

    /// The organization's policy lines as the database holds them now.
    pub async fn lines(
        &self,
        db: &DatabaseConnection,
        organization_id: Uuid,
    ) -> ServiceResult<PolicyLines> {
        (self.rows(db, organization_id))().await
    }

    /// Loads the organization's policy lines from the database.
    fn rows(
        &self,
        db: &DatabaseConnection,
        organization_id: Uuid,
    ) -> impl FnOnce() -> std::pin::Pin<
        Box<dyn std::future::Future<Output = ServiceResult<PolicyLines>> + Send + 'static>,
    > {
        let adapter = SeaOrmAdapter::for_organization(db.clone(), self.policy(), organization_id);
        move || Box::pin(async move { Ok(adapter.lines().await?) })
    }

    /// May `user_id` use `permission` at `scope`? `authz_version` is the organization's, read in
    /// the same request.
    pub async fn decide(
        &self,
        db: &DatabaseConnection,
        authz_version: i64,
        user_id: Uuid,
        scope: &Scope,
        permission: Permission,
    ) -> ServiceResult<bool> {
        let org = scope.organization_id;
        // The hit path first, before anything is cloned for a load.
        if let Some(answer) =
            self.decisions
                .remembered(org, authz_version, user_id, scope, permission)
        {
            return Ok(answer);
        }
        let bits = self
            .decisions
            .decide_many(
                org,
                authz_version,
                user_id,
                scope,
                &[permission],
                self.rows(db, org),
            )
            .await?;
        Ok(bits != 0)
    }

    /// Every permission of the vocabulary `user_id` holds at `scope`.
    pub async fn permissions_at(
        &self,
        db: &DatabaseConnection,
        authz_version: i64,
        user_id: Uuid,
        scope: &Scope,
    ) -> ServiceResult<Vec<Permission>> {
        let org = scope.organization_id;
        let bits = self
            .decisions
            .decide_many(
                org,
                authz_version,
                user_id,
                scope,
                &Permission::ALL,
                self.rows(db, org),
            )
            .await?;
        Ok(Permission::ALL
            .into_iter()
            .filter(|p| bits & (1 << (*p as u32)) != 0)
            .collect())
    }
}

/// Re-reads the policy files of `dir` (on SIGHUP): a policy that lints replaces the one in force
/// at once, atomically, and its new built-in roles get their rows; one that does not is
/// refused, logged and audited, and the policy in force stays. Returns the lint's errors, if
/// any.
pub async fn reload_policy(
    ctx: &crate::AppContext,
    dir: &std::path::Path,
) -> ServiceResult<Result<(), Vec<LintMessage>>> {
    use crate::audit::{AuditAction, AuditEvent};
    let meta = crate::RequestMeta::default();
    match PolicySet::from_dir(dir) {
        Ok(policy) => {
            sync_builtin_roles(&ctx.db, &policy).await?;
            for w in &policy.warnings {
                tracing::warn!(%w, "policy");
            }
            let roles = policy.builtin.len();
            ctx.authz.replace_policy(policy);
            tracing::info!(dir = %dir.display(), roles, "policy reloaded");
            AuditEvent::new(AuditAction::PolicyReloaded)
                .details(
                    serde_json::json!({ "dir": dir.display().to_string(), "builtin_roles": roles }),
                )
                .record(&ctx.db, &meta)
                .await?;
            Ok(Ok(()))
        }
        Err(problems) => {
            for p in &problems {
                tracing::error!(problem = %p, "policy reload refused; the policy in force stays");
            }
            AuditEvent::new(AuditAction::PolicyReloadRejected)
                .details(serde_json::json!({
                    "dir": dir.display().to_string(),
                    "problems": problems.iter().map(ToString::to_string).collect::<Vec<_>>(),
                }))
                .record(&ctx.db, &meta)
                .await?;
            Ok(Err(problems))
        }
    }
}

/// Makes sure every built-in role of the policy has its row (so grants can reference it), with
/// the id every instance derives from its name. Insert-if-missing: instances starting together
/// insert the same rows and the losers' inserts do nothing. Rows of roles no longer in the
/// policy stay (grants may point at them) and grant nothing.
pub async fn sync_builtin_roles(
    db: &impl sea_orm::ConnectionTrait,
    policy: &PolicySet,
) -> Result<(), sea_orm::DbErr> {
    use entity::roles;
    use sea_orm::sea_query::OnConflict;
    use sea_orm::{EntityTrait, Set};
    let now = chrono::Utc::now();
    for name in policy.builtin.keys() {
        roles::Entity::insert(roles::ActiveModel {
            id: Set(migration::builtin_role_id(name)),
            organization_id: Set(None),
            name: Set(name.clone()),
            description: Set(None),
            builtin: Set(true),
            permissions: Set(None),
            version: Set(1),
            created_at: Set(now),
            updated_at: Set(now),
        })
        .on_conflict(OnConflict::new().do_nothing().to_owned())
        .exec_without_returning(db)
        .await?;
    }
    Ok(())
}
