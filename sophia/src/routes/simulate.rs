//! `POST /simulate`: rolls a stored plan forward over the world state.

use axum::{Json, extract::State, http::StatusCode};
use foundry::http::JsonBody;

use crate::{
    app::AppState,
    error::ApiError,
    simulate::{self, Simulation, SimulationRequest},
};

/// Runs the simulation and records it in the HCG.
pub async fn create(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<SimulationRequest>,
) -> Result<(StatusCode, Json<Simulation>), ApiError> {
    let simulation = simulate::run(&state.hcg, &state.cwm, request)?;
    Ok((StatusCode::CREATED, Json(simulation)))
}
