//! `POST /llm`: chat completions from the echo or an OpenAI-compatible provider.

use axum::{Json, extract::State};
use foundry::{
    http::JsonBody,
    openapi::{DownstreamErrors, JsonBodyErrors, Timeout},
};

use crate::{
    app::AppState,
    error::ApiError,
    llm::{LlmRequest, LlmResponse},
};

/// Completes the prompt or conversation.
#[utoipa::path(
    post,
    path = "/llm",
    tag = "hermes",
    request_body = LlmRequest,
    responses(
        (status = 200, description = "The completion", body = LlmResponse),
        JsonBodyErrors,
        DownstreamErrors,
        Timeout,
    )
)]
pub async fn complete(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<LlmRequest>,
) -> Result<Json<LlmResponse>, ApiError> {
    Ok(Json(state.llm.complete(&request).await?))
}
