//! `/api/*`: each route performs one user action, exactly as the CLI command of the same name.

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use foundry::{
    http::{ErrorResponse, JsonBody},
    openapi::{DownstreamErrors, JsonBodyErrors, Timeout, error},
};
use http::StatusCode;
use serde_json::{Value, json};
use utoipa::{
    IntoResponses,
    openapi::{RefOr, Response as OpenApiResponse},
};

use crate::services::{Action, Services};

/// The answers every action shares beyond its success: a refusal of Sophia or Hermes passed on
/// as it is, their failure or silence, and the request's own timeout.
struct Forwarded;

impl IntoResponses for Forwarded {
    fn responses() -> std::collections::BTreeMap<String, RefOr<OpenApiResponse>> {
        let mut responses = std::collections::BTreeMap::from([error(
            "4XX",
            "Sophia's or Hermes' refusal of the request, passed on as it is",
        )]);
        responses.extend(DownstreamErrors::responses());
        responses.extend(Timeout::responses());
        responses
    }
}

/// Performs the action `action` makes of `body`, which must be a JSON object.
async fn perform_with(
    services: &Services,
    body: Value,
    action: fn(Value) -> Action,
    created: bool,
) -> Response {
    match object(body) {
        Ok(body) => perform(services, action(body), created).await,
        Err(error) => error.into_response(),
    }
}

async fn perform(services: &Services, action: Action, created: bool) -> Response {
    let outcome = services.perform(action).await;
    match outcome.result {
        Ok(result) if created => (StatusCode::CREATED, Json(result)).into_response(),
        Ok(result) => Json(result).into_response(),
        Err(error) => ErrorResponse::from(&error).into_response(),
    }
}

fn object(body: Value) -> Result<Value, ErrorResponse> {
    if body.is_object() {
        Ok(body)
    } else {
        Err(ErrorResponse::invalid("the body must be a JSON object"))
    }
}

/// `POST /api/plan` `{"goal": "text" or {"description", "target_state"?}, "priority"?}`.
#[utoipa::path(
    post,
    path = "/api/plan",
    tag = "api",
    request_body(content = Object, description = "A goal: `{\"goal\": text or {\"description\", \"target_state\"?}, \"priority\"?}`, passed on to Sophia's `POST /plan`"),
    responses(
        (status = 201, description = "Sophia's plan", body = Object),
        JsonBodyErrors,
        Forwarded,
    )
)]
pub async fn plan(State(services): State<Services>, JsonBody(body): JsonBody<Value>) -> Response {
    let mut body = match object(body) {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    if let Some(description) = body.get("goal").and_then(Value::as_str) {
        body["goal"] = json!({"description": description});
    }
    perform(&services, Action::Plan(body), true).await
}

/// `POST /api/simulate` `{"plan_id", "k_steps"?, "initial_state"?}`.
#[utoipa::path(
    post,
    path = "/api/simulate",
    tag = "api",
    request_body(content = Object, description = "`{\"plan_id\", \"k_steps\"?, \"initial_state\"?}`, passed on to Sophia's `POST /simulate`"),
    responses(
        (status = 201, description = "Sophia's simulation", body = Object),
        JsonBodyErrors,
        Forwarded,
    )
)]
pub async fn simulate(
    State(services): State<Services>,
    JsonBody(body): JsonBody<Value>,
) -> Response {
    perform_with(&services, body, Action::Simulate, true).await
}

/// `GET /api/state`.
#[utoipa::path(
    get,
    path = "/api/state",
    tag = "api",
    responses(
        (status = 200, description = "Sophia's world state", body = Object),
        Forwarded,
    )
)]
pub async fn state(State(services): State<Services>) -> Response {
    perform(&services, Action::State, false).await
}

/// `POST /api/embed` `{"text", "model"?}`.
#[utoipa::path(
    post,
    path = "/api/embed",
    tag = "api",
    request_body(content = Object, description = "`{\"text\", \"model\"?}`, passed on to Hermes' `POST /embed_text`"),
    responses(
        (status = 200, description = "Hermes' embedding", body = Object),
        JsonBodyErrors,
        Forwarded,
    )
)]
pub async fn embed(State(services): State<Services>, JsonBody(body): JsonBody<Value>) -> Response {
    perform_with(&services, body, Action::Embed, false).await
}

/// `POST /api/search` `{"text", "top_k"?}`.
#[utoipa::path(
    post,
    path = "/api/search",
    tag = "api",
    request_body(content = Object, description = "`{\"text\", \"top_k\"?}`, passed on to Hermes' `POST /search`"),
    responses(
        (status = 200, description = "Hermes' search results", body = Object),
        JsonBodyErrors,
        Forwarded,
    )
)]
pub async fn search(State(services): State<Services>, JsonBody(body): JsonBody<Value>) -> Response {
    perform_with(&services, body, Action::Search, false).await
}

/// `POST /api/chat` `{"prompt" or "messages", "provider"?, "model"?, "max_tokens"?}`.
#[utoipa::path(
    post,
    path = "/api/chat",
    tag = "api",
    request_body(content = Object, description = "`{\"prompt\" or \"messages\", \"provider\"?, \"model\"?, \"max_tokens\"?}`, passed on to Hermes' `POST /llm`"),
    responses(
        (status = 200, description = "Hermes' completion", body = Object),
        JsonBodyErrors,
        Forwarded,
    )
)]
pub async fn chat(State(services): State<Services>, JsonBody(body): JsonBody<Value>) -> Response {
    perform_with(&services, body, Action::Chat, false).await
}
