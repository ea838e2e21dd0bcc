//! Sophia's API errors: each domain error maps to a status and a stable code; internals are
//! logged, never sent.

use axum::response::{IntoResponse, Response};
use foundry::http::{DownstreamError, ErrorResponse};
use http::StatusCode;

use crate::{hcg::HcgError, planner::PlanError, simulate::SimulateError, state::StateError};

/// Everything a Sophia route can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The goal cannot be planned.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The simulation request cannot be served.
    #[error(transparent)]
    Simulate(#[from] SimulateError),
    /// The graph refused or failed.
    #[error(transparent)]
    Hcg(#[from] HcgError),
    /// The world state refused or failed.
    #[error(transparent)]
    State(#[from] StateError),
    /// Hermes failed.
    #[error(transparent)]
    Hermes(#[from] DownstreamError),
}

impl From<ApiError> for ErrorResponse {
    fn from(error: ApiError) -> Self {
        let invalid = |error: &dyn std::fmt::Display| ErrorResponse::invalid(error.to_string());
        match error {
            ApiError::Hermes(error) => error.into(),
            ApiError::Plan(PlanError::TargetState(error)) => state_error("target_state", error),
            ApiError::Plan(error) => invalid(&error),
            ApiError::Simulate(SimulateError::PlanNotFound { plan_id }) => ErrorResponse::new(
                StatusCode::NOT_FOUND,
                "plan_not_found",
                format!("no plan with id '{plan_id}'"),
            ),
            ApiError::Simulate(SimulateError::InitialState(error)) => {
                state_error("initial_state", error)
            }
            ApiError::Simulate(error @ SimulateError::TooManyImaginedBytes { given: true, .. }) => {
                ErrorResponse::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    error.to_string(),
                )
            }
            ApiError::Simulate(SimulateError::Hcg(error)) | ApiError::Hcg(error) => {
                hcg_error(error)
            }
            ApiError::Simulate(
                error @ (SimulateError::State(_) | SimulateError::CorruptPlan { .. }),
            ) => internal(&error),
            ApiError::Simulate(error) => invalid(&error),
            ApiError::State(error) => state_error("state", error),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        ErrorResponse::from(self).into_response()
    }
}

fn hcg_error(error: HcgError) -> ErrorResponse {
    match error {
        HcgError::NotFound { id } => ErrorResponse::not_found(format!("no entity with id '{id}'")),
        HcgError::InvalidLimit(_) => {
            ErrorResponse::new(StatusCode::BAD_REQUEST, "invalid_query", error.to_string())
        }
        HcgError::DuplicateEntity { .. } => {
            ErrorResponse::new(StatusCode::CONFLICT, "conflict", error.to_string())
        }
        HcgError::Backend(_) => internal(&error),
        other => ErrorResponse::invalid(other.to_string()),
    }
}

/// A state error, its message naming `field`, the request's field that held the state.
fn state_error(field: &str, error: StateError) -> ErrorResponse {
    match error {
        StateError::TooLarge { .. } => ErrorResponse::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("{field} {error}"),
        ),
        StateError::Backend(_) => internal(&error),
        other => ErrorResponse::invalid(format!("{field} {other}")),
    }
}

fn internal(error: &dyn std::fmt::Display) -> ErrorResponse {
    tracing::error!(%error, "internal error");
    ErrorResponse::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal_error",
        "Sophia failed to serve the request; the details are in its log",
    )
}
