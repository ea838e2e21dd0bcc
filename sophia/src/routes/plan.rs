//! `POST /plan`: a goal becomes a plan, with Hermes' help, stored in the HCG.

use axum::{Json, extract::State, http::StatusCode};
use foundry::{
    http::JsonBody,
    openapi::{DownstreamErrors, Internal, JsonBodyErrors, Timeout},
};
use futures_util::future::try_join_all;
use tracing::Instrument;

use crate::{
    app::AppState,
    error::ApiError,
    planner::{Plan, PlanDraft, PlanRequest},
};

/// Asks Hermes for the goal's clauses, embeds each step, and stores goal, plan and steps.
#[utoipa::path(
    post,
    path = "/plan",
    tag = "plan",
    request_body = PlanRequest,
    responses(
        (status = 201, description = "The plan, stored in the HCG", body = Plan),
        JsonBodyErrors,
        Internal,
        DownstreamErrors,
        Timeout,
    )
)]
pub async fn create(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<PlanRequest>,
) -> Result<(StatusCode, Json<Plan>), ApiError> {
    let draft = PlanDraft::new(request.goal, request.priority.unwrap_or_default())?;
    let span = draft.span().clone();
    let plan = async move {
        let clauses = state.hermes.clauses(&draft.goal().description).await?;
        let mut steps = draft.steps_from_clauses(&clauses)?;
        // All steps at once: the plan waits for the slowest embedding, not for their sum.
        let embedding_ids =
            try_join_all(steps.iter().map(|step| state.hermes.embed(&step.name))).await?;
        for (step, embedding_id) in steps.iter_mut().zip(embedding_ids) {
            step.embedding_id = Some(embedding_id);
        }
        let planned = draft.build(steps)?;
        state.hcg.write(planned.batch)?;
        Ok::<_, ApiError>(planned.plan)
    }
    .instrument(span)
    .await?;
    Ok((StatusCode::CREATED, Json(plan)))
}
