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

/// A route that passes its JSON object on to Sophia or Hermes as one action: its path, what its
/// body holds, its success, and the action (all but `plan`, which rewrites its body, and `state`).
macro_rules! forwarding_route {
    ($(#[doc = $doc:literal])* $name:ident, $path:literal, $body:literal,
     ($status:literal, $answer:literal), $action:expr) => {
        $(#[doc = $doc])*
        #[utoipa::path(
            post,
            path = $path,
            tag = "api",
            request_body(content = Object, description = $body),
            responses(
                (status = $status, description = $answer, body = Object),
                JsonBodyErrors,
                Forwarded,
            )
        )]
        pub async fn $name(
            State(services): State<Services>,
            JsonBody(body): JsonBody<Value>,
        ) -> Response {
            perform_with(&services, body, $action, $status == 201).await
        }
    };
}

forwarding_route!(
    /// `POST /api/simulate` `{"plan_id", "k_steps"?, "initial_state"?}`.
    simulate,
    "/api/simulate",
    "`{\"plan_id\", \"k_steps\"?, \"initial_state\"?}`, passed on to Sophia's `POST /simulate`",
    (201, "Sophia's simulation"),
    Action::Simulate
);

forwarding_route!(
    /// `POST /api/embed` `{"text", "model"?}`.
    embed,
    "/api/embed",
    "`{\"text\", \"model\"?}`, passed on to Hermes' `POST /embed_text`",
    (200, "Hermes' embedding"),
    Action::Embed
);

forwarding_route!(
    /// `POST /api/search` `{"text", "top_k"?}`.
    search,
    "/api/search",
    "`{\"text\", \"top_k\"?}`, passed on to Hermes' `POST /search`",
    (200, "Hermes' search results"),
    Action::Search
);

forwarding_route!(
    /// `POST /api/chat` `{"prompt" or "messages", "provider"?, "model"?, "max_tokens"?}`.
    chat,
    "/api/chat",
    "`{\"prompt\" or \"messages\", \"provider\"?, \"model\"?, \"max_tokens\"?}`, passed on to Hermes' `POST /llm`",
    (200, "Hermes' completion"),
    Action::Chat
);
