//! `GET /state` and `POST /state`: the CWM world state.

use axum::{Json, extract::State};
use foundry::{
    http::JsonBody,
    openapi::{Internal, JsonBodyErrors, Timeout},
};
use serde::Deserialize;

use crate::{app::AppState, error::ApiError, state::CwmState};

/// The body of `POST /state`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ReplaceState {
    /// The new state, a JSON object.
    #[schema(value_type = Object)]
    pub state: serde_json::Value,
}

/// The current state with its id and time.
#[utoipa::path(
    get,
    path = "/state",
    tag = "state",
    responses(
        (status = 200, description = "The current world state", body = CwmState),
        Internal,
        Timeout,
    )
)]
pub async fn read(State(state): State<AppState>) -> Result<Json<CwmState>, ApiError> {
    Ok(Json(state.cwm.read()?))
}

/// Replaces the state; the answer carries the new state id.
#[utoipa::path(
    post,
    path = "/state",
    tag = "state",
    request_body = ReplaceState,
    responses(
        (status = 200, description = "The new world state", body = CwmState),
        JsonBodyErrors,
        Internal,
        Timeout,
    )
)]
pub async fn replace(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ReplaceState>,
) -> Result<Json<CwmState>, ApiError> {
    Ok(Json(state.cwm.replace(body.state)?))
}
