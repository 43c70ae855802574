use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A role granted to a subject at a scope. Unique
/// `(organization_id, subject_type, subject_id, role, scope_type, scope_id)`.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "role_assignments")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub organization_id: Uuid,
    /// `user` | `api_key`
    #[sea_orm(column_type = "String(StringLen::N(16))")]
    pub subject_type: String,
    pub subject_id: Uuid,
    pub role: String,
    /// `organization` | `account` | `project`
    #[sea_orm(column_type = "String(StringLen::N(16))")]
    pub scope_type: String,
    pub scope_id: Uuid,
    pub granted_by: Option<Uuid>,
    pub created_at: DateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::organizations::Entity",
        from = "Column::OrganizationId",
        to = "super::organizations::Column::Id",
        on_update = "NoAction",
        on_delete = "Cascade"
    )]
    Organizations,
}

impl Related<super::organizations::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Organizations.def()
    }
}

impl ActiveModelBehavior for ActiveModel {}
