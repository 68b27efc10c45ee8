//! One run of a workflow: result, duration, error, and the steps it took.
use sea_orm::entity::prelude::*;

#[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
#[sea_orm(table_name = "workflow_run")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(indexed)]
    pub workflow_id: i64,
    pub tenant_id: i64,
    pub started_at: ChronoDateTimeUtc,
    pub duration_ms: i64,
    /// `ok`, `failed` or `timeout`.
    pub result: String,
    pub error: Option<String>,
    /// Each action taken, in order: `[{"step", "action", "result", "detail", "ms"}]` (runs
    /// logged before steps were recorded: null).
    pub steps: Option<Json>,
    /// What triggered it (with the trigger's key, what makes a redelivery a no-op).
    #[sea_orm(unique)]
    pub run_key: Option<String>,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::workflow::Entity",
        from = "Column::WorkflowId",
        to = "super::workflow::Column::Id",
        on_delete = "Cascade"
    )]
    Workflow,
}

impl ActiveModelBehavior for ActiveModel {}
