//! Hermes' API errors: each domain error maps to a status and its stable code.

use axum::response::{IntoResponse, Response};
use foundry::http::ErrorResponse;
use http::StatusCode;

use crate::{embed::EmbedError, llm::LlmError, nlp::NlpError, vector_store::StoreError};

/// Everything a Hermes route can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The text cannot be embedded.
    #[error(transparent)]
    Embed(#[from] EmbedError),
    /// The vector store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The NLP request is not valid.
    #[error(transparent)]
    Nlp(#[from] NlpError),
    /// The LLM request is not valid, or its provider failed.
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// A search request with neither or both of `text` and `embedding`.
    #[error("give exactly one of `text` and `embedding`")]
    SearchQuery,
}

impl From<ApiError> for ErrorResponse {
    fn from(error: ApiError) -> Self {
        let message = error.to_string();
        match &error {
            ApiError::Embed(error) => {
                ErrorResponse::new(StatusCode::UNPROCESSABLE_ENTITY, error.code(), message)
            }
            ApiError::Nlp(error) => {
                ErrorResponse::new(StatusCode::UNPROCESSABLE_ENTITY, error.code(), message)
            }
            ApiError::SearchQuery => ErrorResponse::invalid(message),
            ApiError::Store(error) if error.is_client_error() => {
                ErrorResponse::new(StatusCode::UNPROCESSABLE_ENTITY, error.code(), message)
            }
            ApiError::Store(error) => {
                ErrorResponse::new(StatusCode::SERVICE_UNAVAILABLE, error.code(), message)
            }
            ApiError::Llm(error) if error.is_client_error() => {
                ErrorResponse::new(StatusCode::UNPROCESSABLE_ENTITY, error.code(), message)
            }
            ApiError::Llm(error) if error.is_timeout() => {
                ErrorResponse::new(StatusCode::GATEWAY_TIMEOUT, error.code(), message)
            }
            ApiError::Llm(error) => {
                ErrorResponse::new(StatusCode::BAD_GATEWAY, error.code(), message)
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        ErrorResponse::from(self).into_response()
    }
}
