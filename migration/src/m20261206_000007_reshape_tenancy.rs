//! Tenancy fit for tenants: composite foreign keys keep every row inside its organization,
//! slugs are unique among live rows only, roles are rows referenced by id (the built-in ones
//! too), grants belong to memberships, and the relational tables are the single source of the
//! Casbin policy (so `casbin_rule` goes). The old tenancy tables never held data.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::*;

use crate::m20261125_000002_create_tenancy as old_tenancy;
use crate::m20261125_000005_create_casbin_rule as old_casbin_rule;

/// The roles `policies/policy.csv` ships; the server inserts any other built-in it finds there.
pub const SHIPPED_BUILTIN_ROLES: [&str; 4] = ["owner", "admin", "member", "viewer"];

/// A built-in role's id, the same on every database and instance (so concurrent starts insert
/// the same row): a UUID (version 8) made of the first bytes of SHA-256 over its name.
pub fn builtin_role_id(name: &str) -> uuid::Uuid {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("tessera:builtin-role:{name}").as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        old_casbin_rule::Migration.down(manager).await?;
        old_tenancy::Migration.down(manager).await?;
        create(manager).await?;
        let now = chrono::Utc::now();
        for name in SHIPPED_BUILTIN_ROLES {
            let insert = Query::insert()
                .into_table(Roles::Table)
                .columns([
                    Roles::Id,
                    Roles::Name,
                    Roles::Builtin,
                    Roles::Version,
                    Roles::CreatedAt,
                    Roles::UpdatedAt,
                ])
                .values_panic([
                    builtin_role_id(name).into(),
                    name.into(),
                    true.into(),
                    1.into(),
                    now.into(),
                    now.into(),
                ])
                .to_owned();
            manager.exec_stmt(insert).await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            MailOutbox::Table.into_iden(),
            Invitations::Table.into_iden(),
            RoleAssignments::Table.into_iden(),
            Roles::Table.into_iden(),
            Memberships::Table.into_iden(),
            Projects::Table.into_iden(),
            Accounts::Table.into_iden(),
            Organizations::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        old_tenancy::Migration.up(manager).await?;
        old_casbin_rule::Migration.up(manager).await
    }
}

fn live_unique(name: &str, table: impl IntoIden, cols: &[DynIden]) -> IndexCreateStatement {
    let mut index = Index::create().name(name).table(table).unique().to_owned();
    for col in cols {
        index.col(col.clone());
    }
    index.and_where(Expr::col(Alias::new("deleted_at")).is_null());
    index
}

fn plain_index(name: &str, table: impl IntoIden, cols: &[DynIden]) -> IndexCreateStatement {
    let mut index = Index::create().name(name).table(table).to_owned();
    for col in cols {
        index.col(col.clone());
    }
    index
}

/// `(organization_id, X)` → `parent(organization_id, id)`: the row's parent is in its organization.
fn same_org_fk(
    name: &str,
    from: impl IntoIden,
    from_col: impl IntoIden,
    to: impl IntoIden,
    to_org: impl IntoIden,
    to_id: impl IntoIden,
    org_col: impl IntoIden,
) -> ForeignKeyCreateStatement {
    ForeignKey::create()
        .name(name)
        .from_tbl(from)
        .from_col(org_col)
        .from_col(from_col)
        .to_tbl(to)
        .to_col(to_org)
        .to_col(to_id)
        .on_delete(ForeignKeyAction::Cascade)
        .to_owned()
}

async fn create(manager: &SchemaManager<'_>) -> Result<(), DbErr> {
    manager
        .create_table(
            Table::create()
                .table(Organizations::Table)
                .col(pk_uuid(Organizations::Id))
                .col(string_len(Organizations::Slug, 63))
                .col(string_len(Organizations::Name, 200))
                .col(integer(Organizations::Version))
                .col(big_integer(Organizations::AuthzVersion).default(0))
                .col(timestamp_with_time_zone(Organizations::CreatedAt))
                .col(timestamp_with_time_zone(Organizations::UpdatedAt))
                .col(timestamp_with_time_zone_null(Organizations::DeletedAt))
                .to_owned(),
        )
        .await?;
    manager
        .create_index(live_unique(
            "uq_organizations_live_slug",
            Organizations::Table,
            &[Organizations::Slug.into_iden()],
        ))
        .await?;

    manager
        .create_table(
            Table::create()
                .table(Accounts::Table)
                .col(pk_uuid(Accounts::Id))
                .col(uuid(Accounts::OrganizationId))
                .col(string_len(Accounts::Slug, 63))
                .col(string_len(Accounts::Name, 200))
                .col(integer(Accounts::Version))
                .col(timestamp_with_time_zone(Accounts::CreatedAt))
                .col(timestamp_with_time_zone(Accounts::UpdatedAt))
                .col(timestamp_with_time_zone_null(Accounts::DeletedAt))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_accounts_organization_id")
                        .from(Accounts::Table, Accounts::OrganizationId)
                        .to(Organizations::Table, Organizations::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                // The target of the composite foreign keys below.
                .index(
                    Index::create()
                        .name("uq_accounts_organization_id_id")
                        .col(Accounts::OrganizationId)
                        .col(Accounts::Id)
                        .unique(),
                )
                .to_owned(),
        )
        .await?;
    manager
        .create_index(live_unique(
            "uq_accounts_live_slug",
            Accounts::Table,
            &[
                Accounts::OrganizationId.into_iden(),
                Accounts::Slug.into_iden(),
            ],
        ))
        .await?;

    manager
        .create_table(
            Table::create()
                .table(Projects::Table)
                .col(pk_uuid(Projects::Id))
                .col(uuid(Projects::OrganizationId))
                .col(uuid(Projects::AccountId))
                .col(string_len(Projects::Slug, 63))
                .col(string_len(Projects::Name, 200))
                .col(integer(Projects::Version))
                .col(timestamp_with_time_zone(Projects::CreatedAt))
                .col(timestamp_with_time_zone(Projects::UpdatedAt))
                .col(timestamp_with_time_zone_null(Projects::DeletedAt))
                .foreign_key(&mut same_org_fk(
                    "fk_projects_account_same_org",
                    Projects::Table,
                    Projects::AccountId,
                    Accounts::Table,
                    Accounts::OrganizationId,
                    Accounts::Id,
                    Projects::OrganizationId,
                ))
                .index(
                    Index::create()
                        .name("uq_projects_organization_id_id")
                        .col(Projects::OrganizationId)
                        .col(Projects::Id)
                        .unique(),
                )
                .to_owned(),
        )
        .await?;
    manager
        .create_index(live_unique(
            "uq_projects_live_slug",
            Projects::Table,
            &[Projects::AccountId.into_iden(), Projects::Slug.into_iden()],
        ))
        .await?;

    manager
        .create_table(
            Table::create()
                .table(Memberships::Table)
                .col(pk_uuid(Memberships::Id))
                .col(uuid(Memberships::OrganizationId))
                .col(uuid(Memberships::UserId))
                .col(timestamp_with_time_zone(Memberships::CreatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_memberships_organization_id")
                        .from(Memberships::Table, Memberships::OrganizationId)
                        .to(Organizations::Table, Organizations::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_memberships_user_id")
                        .from(Memberships::Table, Memberships::UserId)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .index(
                    Index::create()
                        .name("uq_memberships_organization_id_user_id")
                        .col(Memberships::OrganizationId)
                        .col(Memberships::UserId)
                        .unique(),
                )
                .index(
                    Index::create()
                        .name("uq_memberships_organization_id_id")
                        .col(Memberships::OrganizationId)
                        .col(Memberships::Id)
                        .unique(),
                )
                .to_owned(),
        )
        .await?;
    manager
        .create_index(plain_index(
            "idx_memberships_user_id",
            Memberships::Table,
            &[Memberships::UserId.into_iden()],
        ))
        .await?;

    manager
        .create_table(
            Table::create()
                .table(Roles::Table)
                .col(pk_uuid(Roles::Id))
                // NULL for a built-in role, whose permissions come from the policy files.
                .col(uuid_null(Roles::OrganizationId))
                .col(string_len(Roles::Name, 64))
                .col(string_len_null(Roles::Description, 500))
                .col(boolean(Roles::Builtin))
                // A custom role's permissions (JSON array of strings); NULL for a built-in.
                .col(json_null(Roles::Permissions))
                .col(integer(Roles::Version))
                .col(timestamp_with_time_zone(Roles::CreatedAt))
                .col(timestamp_with_time_zone(Roles::UpdatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_roles_organization_id")
                        .from(Roles::Table, Roles::OrganizationId)
                        .to(Organizations::Table, Organizations::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .check(Expr::cust(
                    "(builtin AND organization_id IS NULL AND permissions IS NULL) OR \
                     (NOT builtin AND organization_id IS NOT NULL AND permissions IS NOT NULL)",
                ))
                .to_owned(),
        )
        .await?;
    let mut builtin_names = plain_index(
        "uq_roles_builtin_name",
        Roles::Table,
        &[Roles::Name.into_iden()],
    );
    builtin_names
        .unique()
        .and_where(Expr::col(Roles::OrganizationId).is_null());
    manager.create_index(builtin_names).await?;
    let mut custom_names = plain_index(
        "uq_roles_custom_name",
        Roles::Table,
        &[Roles::OrganizationId.into_iden(), Roles::Name.into_iden()],
    );
    custom_names.unique();
    manager.create_index(custom_names).await?;

    // A grant: a membership's role at a scope of the same organization. `scope_id` repeats the
    // organization, account or project id so that one unique index covers every scope type;
    // `account_id` / `project_id` carry the composite foreign keys.
    manager
        .create_table(
            Table::create()
                .table(RoleAssignments::Table)
                .col(pk_uuid(RoleAssignments::Id))
                .col(uuid(RoleAssignments::OrganizationId))
                .col(uuid(RoleAssignments::MembershipId))
                .col(uuid(RoleAssignments::RoleId))
                .col(string_len(RoleAssignments::ScopeType, 16))
                .col(uuid(RoleAssignments::ScopeId))
                .col(uuid_null(RoleAssignments::AccountId))
                .col(uuid_null(RoleAssignments::ProjectId))
                .col(uuid_null(RoleAssignments::GrantedBy))
                .col(timestamp_with_time_zone(RoleAssignments::CreatedAt))
                .foreign_key(&mut same_org_fk(
                    "fk_role_assignments_membership_same_org",
                    RoleAssignments::Table,
                    RoleAssignments::MembershipId,
                    Memberships::Table,
                    Memberships::OrganizationId,
                    Memberships::Id,
                    RoleAssignments::OrganizationId,
                ))
                .foreign_key(&mut same_org_fk(
                    "fk_role_assignments_account_same_org",
                    RoleAssignments::Table,
                    RoleAssignments::AccountId,
                    Accounts::Table,
                    Accounts::OrganizationId,
                    Accounts::Id,
                    RoleAssignments::OrganizationId,
                ))
                .foreign_key(&mut same_org_fk(
                    "fk_role_assignments_project_same_org",
                    RoleAssignments::Table,
                    RoleAssignments::ProjectId,
                    Projects::Table,
                    Projects::OrganizationId,
                    Projects::Id,
                    RoleAssignments::OrganizationId,
                ))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_role_assignments_role_id")
                        .from(RoleAssignments::Table, RoleAssignments::RoleId)
                        .to(Roles::Table, Roles::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_role_assignments_granted_by")
                        .from(RoleAssignments::Table, RoleAssignments::GrantedBy)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::SetNull),
                )
                .check(Expr::cust(SCOPE_CHECK))
                .index(
                    Index::create()
                        .name("uq_role_assignments_grant")
                        .col(RoleAssignments::MembershipId)
                        .col(RoleAssignments::RoleId)
                        .col(RoleAssignments::ScopeId)
                        .unique(),
                )
                .to_owned(),
        )
        .await?;
    manager
        .create_index(plain_index(
            "idx_role_assignments_organization_id_scope_id",
            RoleAssignments::Table,
            &[
                RoleAssignments::OrganizationId.into_iden(),
                RoleAssignments::ScopeId.into_iden(),
            ],
        ))
        .await?;
    manager
        .create_index(plain_index(
            "idx_role_assignments_role_id",
            RoleAssignments::Table,
            &[RoleAssignments::RoleId.into_iden()],
        ))
        .await?;

    manager
        .create_table(
            Table::create()
                .table(Invitations::Table)
                .col(pk_uuid(Invitations::Id))
                .col(uuid(Invitations::OrganizationId))
                .col(string_len(Invitations::Email, 254))
                .col(uuid(Invitations::RoleId))
                .col(string_len(Invitations::ScopeType, 16))
                .col(uuid(Invitations::ScopeId))
                .col(uuid_null(Invitations::AccountId))
                .col(uuid_null(Invitations::ProjectId))
                .col(string_len_uniq(Invitations::TokenHash, 64))
                .col(uuid_null(Invitations::InvitedBy))
                .col(timestamp_with_time_zone(Invitations::ExpiresAt))
                .col(timestamp_with_time_zone_null(Invitations::AcceptedAt))
                .col(uuid_null(Invitations::AcceptedBy))
                .col(timestamp_with_time_zone_null(Invitations::RevokedAt))
                .col(timestamp_with_time_zone(Invitations::CreatedAt))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_invitations_organization_id")
                        .from(Invitations::Table, Invitations::OrganizationId)
                        .to(Organizations::Table, Organizations::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(&mut same_org_fk(
                    "fk_invitations_account_same_org",
                    Invitations::Table,
                    Invitations::AccountId,
                    Accounts::Table,
                    Accounts::OrganizationId,
                    Accounts::Id,
                    Invitations::OrganizationId,
                ))
                .foreign_key(&mut same_org_fk(
                    "fk_invitations_project_same_org",
                    Invitations::Table,
                    Invitations::ProjectId,
                    Projects::Table,
                    Projects::OrganizationId,
                    Projects::Id,
                    Invitations::OrganizationId,
                ))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_invitations_role_id")
                        .from(Invitations::Table, Invitations::RoleId)
                        .to(Roles::Table, Roles::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_invitations_invited_by")
                        .from(Invitations::Table, Invitations::InvitedBy)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::SetNull),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_invitations_accepted_by")
                        .from(Invitations::Table, Invitations::AcceptedBy)
                        .to(Users::Table, Users::Id)
                        .on_delete(ForeignKeyAction::SetNull),
                )
                .check(Expr::cust(SCOPE_CHECK))
                .to_owned(),
        )
        .await?;
    manager
        .create_index(plain_index(
            "idx_invitations_organization_id_created_at",
            Invitations::Table,
            &[
                Invitations::OrganizationId.into_iden(),
                Invitations::CreatedAt.into_iden(),
            ],
        ))
        .await?;

    // The outbox: the default mail transport. Messages are kept for operators and tests to read
    // (`tessera mail outbox`); a relay may deliver them later.
    manager
        .create_table(
            Table::create()
                .table(MailOutbox::Table)
                .col(pk_uuid(MailOutbox::Id))
                .col(string_len(MailOutbox::Recipient, 254))
                .col(string_len(MailOutbox::Kind, 32))
                .col(string_len(MailOutbox::Subject, 200))
                .col(text(MailOutbox::Body))
                .col(timestamp_with_time_zone(MailOutbox::CreatedAt))
                .to_owned(),
        )
        .await?;
    manager
        .create_index(plain_index(
            "idx_mail_outbox_recipient_created_at",
            MailOutbox::Table,
            &[
                MailOutbox::Recipient.into_iden(),
                MailOutbox::CreatedAt.into_iden(),
            ],
        ))
        .await?;
    Ok(())
}

/// The scope columns agree: an organization scope is the row's own organization, an account
/// or project scope names exactly that account or project.
const SCOPE_CHECK: &str = "(scope_type = 'organization' AND scope_id = organization_id \
     AND account_id IS NULL AND project_id IS NULL) OR \
     (scope_type = 'account' AND account_id IS NOT NULL AND scope_id = account_id \
     AND project_id IS NULL) OR \
     (scope_type = 'project' AND project_id IS NOT NULL AND scope_id = project_id \
     AND account_id IS NULL)";

#[derive(DeriveIden)]
enum Users {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Organizations {
    Table,
    Id,
    Slug,
    Name,
    Version,
    AuthzVersion,
    CreatedAt,
    UpdatedAt,
    DeletedAt,
}

#[derive(DeriveIden)]
enum Accounts {
    Table,
    Id,
    OrganizationId,
    Slug,
    Name,
    Version,
    CreatedAt,
    UpdatedAt,
    DeletedAt,
}

#[derive(DeriveIden)]
enum Projects {
    Table,
    Id,
    OrganizationId,
    AccountId,
    Slug,
    Name,
    Version,
    CreatedAt,
    UpdatedAt,
    DeletedAt,
}

#[derive(DeriveIden)]
enum Memberships {
    Table,
    Id,
    OrganizationId,
    UserId,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Roles {
    Table,
    Id,
    OrganizationId,
    Name,
    Description,
    Builtin,
    Permissions,
    Version,
    CreatedAt,
    UpdatedAt,
}

#[derive(DeriveIden)]
enum RoleAssignments {
    Table,
    Id,
    OrganizationId,
    MembershipId,
    RoleId,
    ScopeType,
    ScopeId,
    AccountId,
    ProjectId,
    GrantedBy,
    CreatedAt,
}

#[derive(DeriveIden)]
enum Invitations {
    Table,
    Id,
    OrganizationId,
    Email,
    RoleId,
    ScopeType,
    ScopeId,
    AccountId,
    ProjectId,
    TokenHash,
    InvitedBy,
    ExpiresAt,
    AcceptedAt,
    AcceptedBy,
    RevokedAt,
    CreatedAt,
}

#[derive(DeriveIden)]
enum MailOutbox {
    Table,
    Id,
    Recipient,
    Kind,
    Subject,
    Body,
    CreatedAt,
}
