//! `GET /hcg/entities/{id}`, `GET /hcg/entities?type=&limit=`, `GET /hcg/snapshot?limit=`.

use axum::{Json, extract::State};
use foundry::http::{PathParam, QueryParams};
use serde::Deserialize;

use crate::{
    app::AppState,
    error::ApiError,
    hcg::{Entity, Limit, Snapshot},
};

/// Query of the list and snapshot routes.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    /// Only entities of this type.
    #[serde(rename = "type")]
    pub entity_type: Option<String>,
    /// At most this many (1 to 1000, default 100).
    pub limit: Option<i64>,
}

/// One entity by id.
pub async fn entity(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
) -> Result<Json<Entity>, ApiError> {
    Ok(Json(state.hcg.get(&id)?))
}

/// Entities, newest first, optionally of one type.
pub async fn entities(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = Limit::from_query(query.limit)?;
    let entity_type = query.entity_type.as_deref().filter(|t| !t.is_empty());
    let entities = state.hcg.list(entity_type, limit)?;
    Ok(Json(
        serde_json::json!({"entities": entities, "count": entities.len()}),
    ))
}

/// The newest entities with the edges among them, and the graph's totals.
pub async fn snapshot(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<Snapshot>, ApiError> {
    Ok(Json(state.hcg.snapshot(Limit::from_query(query.limit)?)?))
}
