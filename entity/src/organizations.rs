use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

/// A tenant (the Casbin domain). `slug` is unique among live organizations.
/// `authz_version` is bumped in every transaction that changes who may do what in it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel, Serialize, Deserialize)]
#[sea_orm(table_name = "organizations")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub id: Uuid,
    pub slug: String,
    pub name: String,
    pub version: i32,
    pub authz_version: i64,
    /// Members must sign in with a second factor to act in this organization.
    pub require_mfa: bool,
    pub created_at: DateTimeUtc,
    pub updated_at: DateTimeUtc,
    pub deleted_at: Option<DateTimeUtc>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
