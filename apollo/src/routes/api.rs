//! `/api/*`: each route performs one user action, exactly as the CLI command of the same name.

use axum::{
    Json,
    extract::State,
    response::{IntoResponse, Response},
};
use foundry::http::{ErrorResponse, JsonBody};
use http::StatusCode;
use serde_json::{Value, json};

use crate::services::{Action, Services};

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
pub async fn simulate(
    State(services): State<Services>,
    JsonBody(body): JsonBody<Value>,
) -> Response {
    match object(body) {
        Ok(body) => perform(&services, Action::Simulate(body), true).await,
        Err(error) => error.into_response(),
    }
}

/// `GET /api/state`.
pub async fn state(State(services): State<Services>) -> Response {
    perform(&services, Action::State, false).await
}

/// `POST /api/embed` `{"text", "model"?}`.
pub async fn embed(State(services): State<Services>, JsonBody(body): JsonBody<Value>) -> Response {
    match object(body) {
        Ok(body) => perform(&services, Action::Embed(body), false).await,
        Err(error) => error.into_response(),
    }
}

/// `POST /api/search` `{"text", "top_k"?}`.
pub async fn search(State(services): State<Services>, JsonBody(body): JsonBody<Value>) -> Response {
    match object(body) {
        Ok(body) => perform(&services, Action::Search(body), false).await,
        Err(error) => error.into_response(),
    }
}

/// `POST /api/chat` `{"prompt" or "messages", "provider"?, "model"?, "max_tokens"?}`.
pub async fn chat(State(services): State<Services>, JsonBody(body): JsonBody<Value>) -> Response {
    match object(body) {
        Ok(body) => perform(&services, Action::Chat(body), false).await,
        Err(error) => error.into_response(),
    }
}
