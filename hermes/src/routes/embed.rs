//! `POST /embed_text` and `POST /search`: embeddings and the vector store.

use axum::{Json, extract::State};
use foundry::{
    http::JsonBody,
    openapi::{JsonBodyErrors, Timeout},
};
use serde::{Deserialize, Serialize};

use crate::{
    app::AppState,
    embed::{self, Embedding},
    error::ApiError,
    vector_store::SearchHit,
};

/// The body of `POST /embed_text`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct EmbedRequest {
    /// The text to embed.
    pub text: String,
    /// The model; the default feature-hashing model when absent.
    pub model: Option<String>,
}

/// The answer of `POST /embed_text`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EmbedResponse {
    /// The L2-normalised vector.
    pub embedding: Vec<f32>,
    /// Its length.
    pub dimension: usize,
    /// The model that made it.
    #[schema(value_type = String)]
    pub model: &'static str,
    /// Its id in the vector store.
    pub embedding_id: String,
}

/// Embeds the text and stores the embedding.
#[utoipa::path(
    post,
    path = "/embed_text",
    tag = "hermes",
    request_body = EmbedRequest,
    responses(
        (status = 200, description = "The embedding, stored", body = EmbedResponse),
        JsonBodyErrors,
        Timeout,
    )
)]
pub async fn embed_text(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<EmbedRequest>,
) -> Result<Json<EmbedResponse>, ApiError> {
    let Embedding { vector, model } = embed::embed(&request.text, request.model.as_deref())?;
    let embedding_id = state.store.insert(request.text, vector.clone()).await?;
    Ok(Json(EmbedResponse {
        dimension: vector.len(),
        embedding: vector,
        model,
        embedding_id,
    }))
}

/// The body of `POST /search`: a text to embed, or an embedding.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct SearchRequest {
    /// A text, embedded with `model` (not stored).
    pub text: Option<String>,
    /// A query vector of the store's dimension.
    pub embedding: Option<Vec<f32>>,
    /// The model for `text`.
    pub model: Option<String>,
    /// How many results, 1 to 100.
    #[serde(default = "default_top_k")]
    #[schema(default = 5, minimum = 1, maximum = 100)]
    pub top_k: i64,
}

fn default_top_k() -> i64 {
    5
}

/// The answer of `POST /search`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchResponse {
    /// The nearest stored embeddings, most similar first.
    pub results: Vec<SearchHit>,
}

/// Finds the stored embeddings nearest to the query.
#[utoipa::path(
    post,
    path = "/search",
    tag = "hermes",
    request_body = SearchRequest,
    responses(
        (status = 200, description = "The nearest stored embeddings", body = SearchResponse),
        JsonBodyErrors,
        Timeout,
    )
)]
pub async fn search(
    State(state): State<AppState>,
    JsonBody(request): JsonBody<SearchRequest>,
) -> Result<Json<SearchResponse>, ApiError> {
    let query = match (request.text, request.embedding) {
        (Some(text), None) => embed::embed(&text, request.model.as_deref())?.vector,
        (None, Some(vector)) => vector,
        _ => return Err(ApiError::SearchQuery),
    };
    let results = state.store.search(&query, request.top_k).await?;
    Ok(Json(SearchResponse { results }))
}
