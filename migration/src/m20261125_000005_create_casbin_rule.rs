use sea_orm_migration::{prelude::*, schema::*};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(CasbinRule::Table)
                    .col(big_pk_auto(CasbinRule::Id))
                    .col(string(CasbinRule::Ptype))
                    .col(string(CasbinRule::V0).default(""))
                    .col(string(CasbinRule::V1).default(""))
                    .col(string(CasbinRule::V2).default(""))
                    .col(string(CasbinRule::V3).default(""))
                    .col(string(CasbinRule::V4).default(""))
                    .col(string(CasbinRule::V5).default(""))
                    .index(
                        Index::create()
                            .name("uq_casbin_rule")
                            .col(CasbinRule::Ptype)
                            .col(CasbinRule::V0)
                            .col(CasbinRule::V1)
                            .col(CasbinRule::V2)
                            .col(CasbinRule::V3)
                            .col(CasbinRule::V4)
                            .col(CasbinRule::V5)
                            .unique(),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(CasbinRule::Table).to_owned())
            .await
    }
}

#[derive(DeriveIden)]
enum CasbinRule {
    Table,
    Id,
    Ptype,
    V0,
    V1,
    V2,
    V3,
    V4,
    V5,
}
