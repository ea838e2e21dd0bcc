//! `GET /state` and `POST /state`: the CWM world state.

use axum::{Json, extract::State};
use foundry::http::JsonBody;
use serde::Deserialize;

use crate::{app::AppState, error::ApiError, state::CwmState};

/// The body of `POST /state`.
#[derive(Debug, Deserialize)]
pub struct ReplaceState {
    /// The new state, a JSON object.
    pub state: serde_json::Value,
}

/// The current state with its id and time.
pub async fn read(State(state): State<AppState>) -> Result<Json<CwmState>, ApiError> {
    Ok(Json(state.cwm.read()?))
}

/// Replaces the state; the answer carries the new state id.
pub async fn replace(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ReplaceState>,
) -> Result<Json<CwmState>, ApiError> {
    Ok(Json(state.cwm.replace(body.state)?))
}
