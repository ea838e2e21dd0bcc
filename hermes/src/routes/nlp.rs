//! `POST /simple_nlp`: rule-based sentences, tokens, lemmas, entities and tags.

use axum::{Json, extract::State};
use foundry::{
    http::JsonBody,
    openapi::{JsonBodyErrors, Timeout},
};
use serde::Deserialize;

use crate::{
    app::AppState,
    error::ApiError,
    nlp::{self, NlpOutput},
};

/// The body of `POST /simple_nlp`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct NlpRequest {
    /// The text to analyse.
    pub text: String,
    /// Which analyses, e.g. `["sentences", "ner"]`.
    pub operations: Vec<String>,
}

/// Runs the requested analyses.
#[utoipa::path(
    post,
    path = "/simple_nlp",
    tag = "hermes",
    request_body = NlpRequest,
    responses(
        (status = 200, description = "The analyses asked for", body = NlpOutput),
        JsonBodyErrors,
        Timeout,
    )
)]
pub async fn simple_nlp(
    State(_state): State<AppState>,
    JsonBody(request): JsonBody<NlpRequest>,
) -> Result<Json<NlpOutput>, ApiError> {
    Ok(Json(nlp::analyze(&request.text, &request.operations)?))
}
