//! `POST /simulate`: rolls a stored plan forward over the world state.

use axum::{Json, extract::State, http::StatusCode};
use foundry::{
    http::JsonBody,
    openapi::{ErrorBody, Internal, JsonBodyErrors, Timeout},
};

use crate::{
    app::AppState,
    error::ApiError,
    simulate::{self, Simulation, SimulationRequest},
};

/// Runs the simulation and records it in the HCG.
#[utoipa::path(
    post,
    path = "/simulate",
    tag = "simulate",
    request_body = SimulationRequest,
    responses(
        (status = 201, description = "The simulation, recorded in the HCG", body = Simulation),
        JsonBodyErrors,
        (status = 404, description = "`plan_not_found`: no plan has this id", body = ErrorBody),
        Internal,
        Timeout,
    )
)]
pub async fn create(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<SimulationRequest>,
) -> Result<(StatusCode, Json<Simulation>), ApiError> {
    let simulation = simulate::run(&state.hcg, &state.cwm, request)?;
    Ok((StatusCode::CREATED, Json(simulation)))
}
