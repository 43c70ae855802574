//! Authorization: the permission vocabulary, scopes, the policy files and the one place that
//! asks Casbin. Every tenant-scoped decision goes through [`Authz::decide`].

mod adapter;
pub mod policy;
pub mod policy_test;
mod vocabulary;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use casbin::{CoreApi, DefaultModel, Enforcer};
use sea_orm::DatabaseConnection;
use uuid::Uuid;

pub use adapter::SeaOrmAdapter;
pub use policy::{LintMessage, PolicySet};
pub use vocabulary::{Permission, ScopeType};

use crate::error::{ServiceError, ServiceResult};

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

/// An organization's enforcer, built from its rows at one `authz_version`.
struct TenantEnforcer {
    version: i64,
    enforcer: Arc<Enforcer>,
}

/// Decides with Casbin over the policy files and the organization's rows. Enforcers are built
/// per organization, lazily, and rebuilt when the organization's `authz_version` (bumped by
/// every transaction that changes grants, roles, memberships or scopes) has moved, so every
/// instance on the database decides on the committed state.
pub struct Authz {
    policy: RwLock<Arc<PolicySet>>,
    tenants: RwLock<HashMap<Uuid, TenantEnforcer>>,
}

const NONE: &str = "-";

impl Authz {
    pub fn new(policy: PolicySet) -> Self {
        Self {
            policy: RwLock::new(Arc::new(policy)),
            tenants: RwLock::new(HashMap::new()),
        }
    }

    pub fn policy(&self) -> Arc<PolicySet> {
        self.policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The organization's enforcer at `version`, built from the database if this instance has
    /// none that recent.
    async fn enforcer(
        &self,
        db: &DatabaseConnection,
        organization_id: Uuid,
        version: i64,
    ) -> ServiceResult<Arc<Enforcer>> {
        if let Some(t) = self
            .tenants
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&organization_id)
        {
            if t.version == version {
                return Ok(t.enforcer.clone());
            }
        }
        let policy = self.policy();
        let enforcer = Arc::new(
            build_enforcer(
                &policy,
                SeaOrmAdapter::for_organization(db.clone(), policy.clone(), organization_id),
            )
            .await?,
        );
        let mut tenants = self
            .tenants
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let keep = tenants
            .get(&organization_id)
            .is_some_and(|t| t.version > version);
        if !keep {
            tenants.insert(
                organization_id,
                TenantEnforcer {
                    version,
                    enforcer: enforcer.clone(),
                },
            );
        }
        Ok(enforcer)
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
        let enforcer = self
            .enforcer(db, scope.organization_id, authz_version)
            .await?;
        enforce(&enforcer, user_id, scope, permission)
    }

    /// Every permission of the vocabulary `user_id` holds at `scope`.
    pub async fn permissions_at(
        &self,
        db: &DatabaseConnection,
        authz_version: i64,
        user_id: Uuid,
        scope: &Scope,
    ) -> ServiceResult<Vec<Permission>> {
        let enforcer = self
            .enforcer(db, scope.organization_id, authz_version)
            .await?;
        let mut held = Vec::new();
        for permission in Permission::ALL {
            if enforce(&enforcer, user_id, scope, permission)? {
                held.push(permission);
            }
        }
        Ok(held)
    }
}

/// A Casbin enforcer over the policy's model and whatever `adapter` loads.
pub async fn build_enforcer(policy: &PolicySet, adapter: SeaOrmAdapter) -> ServiceResult<Enforcer> {
    let model = DefaultModel::from_str(&policy.model_text)
        .await
        .map_err(|e| ServiceError::unexpected_msg(format!("casbin model: {e}")))?;
    Enforcer::new(model, adapter)
        .await
        .map_err(|e| ServiceError::unexpected_msg(format!("casbin enforcer: {e}")))
}

/// One Casbin decision, the request shaped as `model.conf` defines it.
pub fn enforce(
    enforcer: &Enforcer,
    user_id: Uuid,
    scope: &Scope,
    permission: Permission,
) -> ServiceResult<bool> {
    let account = scope.account_id.map(|id| id.to_string());
    let project = scope.project_id.map(|id| id.to_string());
    enforcer
        .enforce((
            user_id.to_string(),
            scope.organization_id.to_string(),
            account.as_deref().unwrap_or(NONE),
            project.as_deref().unwrap_or(NONE),
            permission.as_str(),
        ))
        .map_err(|e| ServiceError::unexpected_msg(format!("casbin enforce: {e}")))
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
