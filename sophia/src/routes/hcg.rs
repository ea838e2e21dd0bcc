//! `GET /hcg/entities/{id}`, `GET /hcg/entities?type=&limit=`, `GET /hcg/snapshot?limit=`.

use axum::{Json, extract::State};
use foundry::{
    http::{PathParam, QueryParams},
    openapi::{ErrorBody, Internal, PathErrors, QueryErrors, Timeout},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::{
    app::AppState,
    error::ApiError,
    hcg::{Entity, Limit, Snapshot},
};

/// Query of the list and snapshot routes.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Only entities of this type.
    #[serde(rename = "type")]
    pub entity_type: Option<String>,
    /// At most this many (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<i64>,
}

/// The answer of `GET /hcg/entities`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EntityList {
    /// The entities, newest first.
    pub entities: Vec<Entity>,
    /// How many there are in `entities`.
    pub count: usize,
}

/// One entity by id.
#[utoipa::path(
    get,
    path = "/hcg/entities/{id}",
    tag = "hcg",
    params(("id" = String, Path, description = "The entity's id")),
    responses(
        (status = 200, description = "The entity", body = Entity),
        PathErrors,
        (status = 404, description = "`not_found`: no entity has this id", body = ErrorBody),
        Internal,
        Timeout,
    )
)]
pub async fn entity(
    State(state): State<AppState>,
    PathParam(id): PathParam<String>,
) -> Result<Json<Entity>, ApiError> {
    Ok(Json(state.hcg.get(&id)?))
}

/// Entities, newest first, optionally of one type.
#[utoipa::path(
    get,
    path = "/hcg/entities",
    tag = "hcg",
    params(ListQuery),
    responses(
        (status = 200, description = "The entities", body = EntityList),
        QueryErrors,
        Internal,
        Timeout,
    )
)]
pub async fn entities(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<EntityList>, ApiError> {
    let limit = Limit::from_query(query.limit)?;
    let entity_type = query.entity_type.as_deref().filter(|t| !t.is_empty());
    let entities = state.hcg.list(entity_type, limit)?;
    Ok(Json(EntityList {
        count: entities.len(),
        entities,
    }))
}

/// The newest entities with the edges among them, and the graph's totals.
#[utoipa::path(
    get,
    path = "/hcg/snapshot",
    tag = "hcg",
    params(("limit" = Option<i64>, Query, minimum = 1, maximum = 1000, description = "At most this many entities (1 to 1000, default 100)")),
    responses(
        (status = 200, description = "The snapshot", body = Snapshot),
        QueryErrors,
        Internal,
        Timeout,
    )
)]
pub async fn snapshot(
    State(state): State<AppState>,
    QueryParams(query): QueryParams<ListQuery>,
) -> Result<Json<Snapshot>, ApiError> {
    Ok(Json(state.hcg.snapshot(Limit::from_query(query.limit)?)?))
}
