use sea_orm::entity::prelude::*;

/// One client's counter for one rate-limited action, over two aligned windows (see
/// `service::limits`). Written only by single-statement upserts.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "rate_limit_counters")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub key: String,
    /// Unix time divided by the window length: the window `current_count` belongs to.
    pub window_index: i64,
    pub previous_count: i32,
    pub current_count: i32,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
