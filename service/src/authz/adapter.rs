//! The Casbin adapter over SeaORM. The relational tables (roles, memberships, role assignments,
//! the scopes' `deleted_at`) are the single source of truth: this adapter builds Casbin's lines
//! from them, so there is no rule table to keep in step. It is read-only by design: grants and
//! roles change through the service layer, in transactions that also bump the organization's
//! `authz_version`, and enforcers are rebuilt from the rows.

use std::sync::Arc;

use async_trait::async_trait;
use casbin::{Adapter, Filter, Model};
use entity::{accounts, memberships, projects, role_assignments, roles, users};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, JoinType, Query};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, FromQueryResult, QueryFilter};
use uuid::Uuid;

use super::policy::PolicySet;

/// Loads the built-in roles from the policy files plus, for one organization (or all, for the
/// reference enforcer in tests and `tessera policy test`), its custom roles and live grants.
pub struct SeaOrmAdapter {
    db: DatabaseConnection,
    policy: Arc<PolicySet>,
    organization_id: Option<Uuid>,
}

impl SeaOrmAdapter {
    pub fn for_organization(
        db: DatabaseConnection,
        policy: Arc<PolicySet>,
        organization_id: Uuid,
    ) -> Self {
        Self {
            db,
            policy,
            organization_id: Some(organization_id),
        }
    }

    /// Every organization at once: what a plain global enforcer would load.
    pub fn all_organizations(db: DatabaseConnection, policy: Arc<PolicySet>) -> Self {
        Self {
            db,
            policy,
            organization_id: None,
        }
    }

    /// The lines this adapter loads: `("p", fields)` and `("g", fields)`.
    pub async fn lines(&self) -> Result<Vec<(&'static str, Vec<String>)>, sea_orm::DbErr> {
        let mut out = self.policy.builtin_lines();

        let mut custom = roles::Entity::find().filter(roles::Column::Builtin.eq(false));
        if let Some(org) = self.organization_id {
            custom = custom.filter(roles::Column::OrganizationId.eq(org));
        }
        for role in custom.all(&self.db).await? {
            let (Some(org), Some(perms)) = (role.organization_id, role.permissions) else {
                continue;
            };
            // Stored permissions were parsed on write; a name that left the vocabulary since
            // grants nothing.
            for perm in perms.as_array().into_iter().flatten() {
                if let Some(p) = perm
                    .as_str()
                    .and_then(|p| p.parse::<super::Permission>().ok())
                {
                    out.push((
                        "p",
                        vec![role.id.to_string(), org.to_string(), p.as_str().into()],
                    ));
                }
            }
        }

        for grant in self.grants().await? {
            let role = if grant.builtin {
                grant.role_name
            } else {
                grant.role_id.to_string()
            };
            out.push((
                "g",
                vec![grant.user_id.to_string(), role, grant.scope_id.to_string()],
            ));
        }
        Ok(out)
    }

    /// Grants of active users at live scopes (an account or project deleted, or under a deleted
    /// account, grants nothing).
    async fn grants(&self) -> Result<Vec<GrantRow>, sea_orm::DbErr> {
        let (ra, m, r, u) = (
            role_assignments::Entity,
            memberships::Entity,
            roles::Entity,
            users::Entity,
        );
        let (acc, proj, proj_acc) = (Alias::new("a"), Alias::new("p"), Alias::new("pa"));
        let mut q = Query::select();
        q.column((m, memberships::Column::UserId))
            .column((ra, role_assignments::Column::RoleId))
            .expr_as(Expr::col((r, roles::Column::Name)), Alias::new("role_name"))
            .column((r, roles::Column::Builtin))
            .column((ra, role_assignments::Column::ScopeId))
            .from(ra)
            .inner_join(
                m,
                Expr::col((m, memberships::Column::Id))
                    .equals((ra, role_assignments::Column::MembershipId)),
            )
            .inner_join(
                r,
                Expr::col((r, roles::Column::Id)).equals((ra, role_assignments::Column::RoleId)),
            )
            .inner_join(
                u,
                Expr::col((u, users::Column::Id)).equals((m, memberships::Column::UserId)),
            )
            .join_as(
                JoinType::LeftJoin,
                accounts::Entity,
                acc.clone(),
                Expr::col((acc.clone(), accounts::Column::Id))
                    .equals((ra, role_assignments::Column::AccountId)),
            )
            .join_as(
                JoinType::LeftJoin,
                projects::Entity,
                proj.clone(),
                Expr::col((proj.clone(), projects::Column::Id))
                    .equals((ra, role_assignments::Column::ProjectId)),
            )
            .join_as(
                JoinType::LeftJoin,
                accounts::Entity,
                proj_acc.clone(),
                Expr::col((proj_acc.clone(), accounts::Column::Id))
                    .equals((proj.clone(), projects::Column::AccountId)),
            )
            .and_where(Expr::col((u, users::Column::DeletedAt)).is_null())
            .and_where(Expr::col((u, users::Column::Status)).eq("active"))
            .and_where(
                Expr::col((acc.clone(), accounts::Column::Id))
                    .is_null()
                    .or(Expr::col((acc, accounts::Column::DeletedAt)).is_null()),
            )
            .and_where(
                Expr::col((proj.clone(), projects::Column::Id))
                    .is_null()
                    .or(Expr::col((proj, projects::Column::DeletedAt))
                        .is_null()
                        .and(Expr::col((proj_acc, accounts::Column::DeletedAt)).is_null())),
            );
        if let Some(org) = self.organization_id {
            q.and_where(Expr::col((ra, role_assignments::Column::OrganizationId)).eq(org));
        }
        let backend = self.db.get_database_backend();
        GrantRow::find_by_statement(backend.build(&q))
            .all(&self.db)
            .await
    }
}

#[derive(Debug, FromQueryResult)]
struct GrantRow {
    user_id: Uuid,
    role_id: Uuid,
    role_name: String,
    builtin: bool,
    scope_id: Uuid,
}

fn adapter_error(e: sea_orm::DbErr) -> casbin::Error {
    casbin::Error::from(casbin::error::AdapterError(Box::new(e)))
}

/// The methods of a read-only adapter that only loads: saving and incremental changes do
/// nothing, since the rows (or the fixed lines) are the source of truth, not the enforcer.
macro_rules! read_only_adapter {
    ($ty:ty, |$this:ident, $m:ident| $load:block) => {
        #[async_trait]
        impl Adapter for $ty {
        async fn load_policy(&mut $this, $m: &mut dyn Model) -> casbin::Result<()> $load

        async fn load_filtered_policy<'a>(
            &mut self,
            m: &mut dyn Model,
            _f: Filter<'a>,
        ) -> casbin::Result<()> {
            // Filtered by construction (one organization, or a fixed set of lines).
            self.load_policy(m).await
        }

        async fn save_policy(&mut self, _m: &mut dyn Model) -> casbin::Result<()> {
            Ok(())
        }

        async fn clear_policy(&mut self) -> casbin::Result<()> {
            Ok(())
        }

        /// `false` even for one organization: to Casbin these lines are the whole policy of the
        /// enforcer they feed (and `Enforcer::new` loads nothing from a filtered adapter).
        fn is_filtered(&self) -> bool {
            false
        }

        async fn add_policy(&mut self, _: &str, _: &str, _: Vec<String>) -> casbin::Result<bool> {
            Ok(false)
        }

        async fn add_policies(
            &mut self,
            _: &str,
            _: &str,
            _: Vec<Vec<String>>,
        ) -> casbin::Result<bool> {
            Ok(false)
        }

        async fn remove_policy(
            &mut self,
            _: &str,
            _: &str,
            _: Vec<String>,
        ) -> casbin::Result<bool> {
            Ok(false)
        }

        async fn remove_policies(
            &mut self,
            _: &str,
            _: &str,
            _: Vec<Vec<String>>,
        ) -> casbin::Result<bool> {
            Ok(false)
        }

        async fn remove_filtered_policy(
            &mut self,
            _: &str,
            _: &str,
            _: usize,
            _: Vec<String>,
        ) -> casbin::Result<bool> {
            Ok(false)
        }
        }
    };
}

read_only_adapter!(SeaOrmAdapter, |self, m| {
    let lines = self.lines().await.map_err(adapter_error)?;
    FixedAdapter(lines).load_policy(m).await
});

/// Hands Casbin a fixed set of `("p" | "g", fields)` lines: the lint's and `tessera policy
/// test`'s enforcers, and what [`SeaOrmAdapter`] loads.
pub struct FixedAdapter(pub Vec<(&'static str, Vec<String>)>);

read_only_adapter!(FixedAdapter, |self, m| {
    for (ptype, rule) in &self.0 {
        m.add_policy(ptype, ptype, rule.clone());
    }
    Ok(())
});
