use sea_orm::entity::prelude::*;

/// One account's budget of password and MFA-code checks (see `service::limits`). `subject` is
/// a user id or the stand-in id of an unknown email. Written only by single-statement upserts.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "secret_check_limits")]
pub struct Model {
    #[sea_orm(primary_key, auto_increment = false)]
    pub subject: Uuid,
    pub window_index: i64,
    /// Checks that failed (or are running) in the previous and the current window.
    pub previous_count: i32,
    pub current_count: i32,
    /// Failed (or running) checks since the last success.
    pub consecutive_failures: i32,
    /// The delay the last reservation imposed; doubles with each further failure.
    pub delay_secs: i32,
    /// Unix time before which no further check starts.
    pub not_before: i64,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
