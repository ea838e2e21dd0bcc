//! Why an action fails, and the one answer each failure gets, on the command line and the API.

use foundry::http::{DownstreamError, ErrorResponse};
use http::StatusCode;

/// Why an action failed.
#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    /// A service failed or refused.
    #[error(transparent)]
    Downstream(#[from] DownstreamError),
    /// `status` found services down.
    #[error("{message}")]
    Unhealthy {
        /// Which are down, and why.
        message: String,
        /// Every service's answer, the healthy ones too.
        services: serde_json::Value,
    },
}

impl From<&ActionError> for ErrorResponse {
    /// A service's error passes on as foundry maps it (its 4xx as they are, else 502/504
    /// naming it); services found down by `status` are 502 `unhealthy`.
    fn from(error: &ActionError) -> Self {
        match error {
            ActionError::Downstream(error) => ErrorResponse::from_ref(error),
            ActionError::Unhealthy { .. } => {
                ErrorResponse::new(StatusCode::BAD_GATEWAY, "unhealthy", error.to_string())
            }
        }
    }
}
