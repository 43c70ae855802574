//! The closed permission vocabulary and the scope types; `policies/policy.csv` and custom roles
//! may only use these.

use std::fmt;
use std::str::FromStr;

macro_rules! permissions {
    ($($variant:ident => $name:literal, $doc:literal;)+) => {
        /// A `resource:action` permission.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Permission {
            $(#[doc = $doc] $variant,)+
        }

        impl Permission {
            pub const ALL: [Permission; [$($name),+].len()] = [$(Permission::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Permission::$variant => $name,)+
                }
            }

            pub fn description(self) -> &'static str {
                match self {
                    $(Permission::$variant => $doc,)+
                }
            }
        }

        impl FromStr for Permission {
            type Err = UnknownPermission;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($name => Ok(Permission::$variant),)+
                    _ => Err(UnknownPermission(s.to_owned())),
                }
            }
        }
    };
}

permissions! {
    OrgRead => "org:read", "Read the organization's record.";
    OrgUpdate => "org:update", "Rename the organization or change its slug.";
    OrgDelete => "org:delete", "Delete the organization and everything in it.";
    AccountCreate => "account:create", "Create accounts.";
    AccountRead => "account:read", "Read accounts.";
    AccountUpdate => "account:update", "Update accounts.";
    AccountDelete => "account:delete", "Delete accounts (and their projects).";
    ProjectCreate => "project:create", "Create projects.";
    ProjectRead => "project:read", "Read projects.";
    ProjectUpdate => "project:update", "Update projects.";
    ProjectDelete => "project:delete", "Delete projects.";
    MemberRead => "member:read", "List members and invitations.";
    MemberInvite => "member:invite", "Invite people and revoke invitations.";
    MemberRemove => "member:remove", "Remove members.";
    RoleRead => "role:read", "List roles and every member's role assignments.";
    RoleManage => "role:manage", "Create, edit and delete custom roles.";
    RoleAssign => "role:assign", "Grant and revoke roles.";
    AuthzCheck => "authz:check", "Ask authorization questions about other users.";
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown permission `{0}`")]
pub struct UnknownPermission(pub String);

/// The level of a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScopeType {
    Organization,
    Account,
    Project,
}

impl ScopeType {
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeType::Organization => "organization",
            ScopeType::Account => "account",
            ScopeType::Project => "project",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "organization" => Some(ScopeType::Organization),
            "account" => Some(ScopeType::Account),
            "project" => Some(ScopeType::Project),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_permission_round_trips_and_unknown_ones_fail() {
        for p in Permission::ALL {
            assert_eq!(p.as_str().parse::<Permission>(), Ok(p));
        }
        assert!("org:own".parse::<Permission>().is_err());
        assert!("ORG:READ".parse::<Permission>().is_err());
    }
}
