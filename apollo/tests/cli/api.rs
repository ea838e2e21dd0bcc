//! The Apollo API through its router: forwarding, errors, and the `apollo.command` span tree.

use axum::body::Body;
use foundry::testing::{Kind, Status, capture, new_traceparent, span_named};
use http::{Request, StatusCode};
use serde_json::Value;
use tower::ServiceExt;

use crate::support::{closed_url, services};

fn apollo(sophia: &str, hermes: &str) -> axum::Router {
    let services =
        apollo::services::Services::new(sophia, hermes, None, std::time::Duration::from_secs(5))
            .unwrap();
    apollo::app::router(
        services,
        apollo::diagnostics::Diagnostics::new(1000),
        apollo::routes::diagnostics::Links::default(),
    )
}

/// A real Sophia in this process whose Hermes is at `hermes_url`, with `timeout_ms` to answer.
async fn sophia_before(hermes_url: &str, timeout_ms: u64) -> String {
    let state =
        sophia::app::AppState::new(hermes_url, std::time::Duration::from_millis(timeout_ms))
            .unwrap();
    crate::support::serve(sophia::app::router(state)).await
}

async fn send(router: axum::Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = router.oneshot(request).await.unwrap();
    let status = response.status();
    let body = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .unwrap();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

fn post(uri: &str, traceparent: &str, body: &str) -> Request<Body> {
    Request::post(uri)
        .header("content-type", "application/json")
        .header("traceparent", traceparent)
        .body(Body::from(body.to_owned()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_plan_is_one_trace_under_apollo_command() {
    // Arrange
    let capture = capture("apollo");
    let (sophia, hermes) = services().await;
    let (trace_id, traceparent) = new_traceparent(true);

    // Act
    let (status, body) = send(
        apollo(&sophia, &hermes),
        post(
            "/api/plan",
            &traceparent,
            r#"{"goal": "Pick up the red block"}"#,
        ),
    )
    .await;

    // Assert
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["plan"][0]["action_type"], "pick");
    let spans = capture.spans(&trace_id);
    let by_name = |name: &str| span_named(&spans, name);
    let server = spans
        .iter()
        .find(|s| s.kind == Kind::Server && s.name == "POST /api/plan")
        .unwrap();
    let command = by_name("apollo.command");
    let api = by_name("apollo.api.sophia");
    let client = spans
        .iter()
        .find(|s| s.kind == Kind::Client && s.name == "POST /plan")
        .unwrap();
    assert_eq!(server.service_name, "apollo");
    assert_eq!(command.parent_span_id, server.span_id);
    assert_eq!(command.str("command.name"), Some("plan"));
    assert_eq!(command.bool("command.success"), Some(true));
    assert_eq!(api.parent_span_id, command.span_id);
    assert_eq!(client.parent_span_id, api.span_id);
    assert_eq!(client.int("http.response.status_code"), Some(201));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_errors_pass_through_or_name_the_failing_service() {
    let capture = capture("apollo");
    let (sophia, hermes) = services().await;
    let closed = closed_url();
    let (trace_id, traceparent) = new_traceparent(true);

    let (unknown, unknown_body) = send(
        apollo(&sophia, &hermes),
        post("/api/simulate", &traceparent, r#"{"plan_id": "nope"}"#),
    )
    .await;
    let (down, down_body) = send(
        apollo(&closed, &hermes),
        post("/api/plan", &traceparent, r#"{"goal": "Open the door"}"#),
    )
    .await;
    // Sophia up, Hermes behind it down, then slow: the service at fault is named.
    let (behind, behind_body) = send(
        apollo(&sophia_before(&closed, 5_000).await, &hermes),
        post("/api/plan", &traceparent, r#"{"goal": "Open the door"}"#),
    )
    .await;
    let silent_url = format!("http://{}", foundry::testing::silent_address());
    let (slow, slow_body) = send(
        apollo(&sophia_before(&silent_url, 200).await, &hermes),
        post("/api/plan", &traceparent, r#"{"goal": "Open the door"}"#),
    )
    .await;
    let (bad, bad_body) = send(
        apollo(&sophia, &hermes),
        post("/api/embed", &traceparent, "[1, 2]"),
    )
    .await;
    let (broken, broken_body) = send(
        apollo(&sophia, &hermes),
        post("/api/chat", &traceparent, "{not json"),
    )
    .await;

    assert_eq!(unknown, StatusCode::NOT_FOUND);
    assert_eq!(unknown_body["error"]["code"], "plan_not_found");
    assert_eq!(down, StatusCode::BAD_GATEWAY);
    assert_eq!(down_body["error"]["code"], "sophia_unavailable");
    assert_eq!(behind, StatusCode::BAD_GATEWAY, "{behind_body}");
    assert_eq!(behind_body["error"]["code"], "hermes_unavailable");
    assert_eq!(slow, StatusCode::GATEWAY_TIMEOUT, "{slow_body}");
    assert_eq!(slow_body["error"]["code"], "hermes_timeout");
    assert_eq!(bad, StatusCode::UNPROCESSABLE_ENTITY, "{bad_body}");
    assert_eq!(broken, StatusCode::BAD_REQUEST);
    assert_eq!(broken_body["error"]["code"], "invalid_json");
    let spans = capture.spans(&trace_id);
    let failed: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "apollo.command" && s.bool("command.success") == Some(false))
        .collect();
    assert_eq!(failed.len(), 4, "{spans:#?}");
    assert!(failed.iter().all(|s| s.status == Status::Error));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_forwards_every_action() {
    let (sophia, hermes) = services().await;
    let (_, traceparent) = new_traceparent(true);
    let router = apollo(&sophia, &hermes);

    let (plan, plan_body) = send(
        router.clone(),
        post(
            "/api/plan",
            &traceparent,
            r#"{"goal": {"description": "Open the door"}}"#,
        ),
    )
    .await;
    let plan_id = plan_body["plan_id"].as_str().unwrap();
    let (simulate, _) = send(
        router.clone(),
        post(
            "/api/simulate",
            &traceparent,
            &format!(r#"{{"plan_id": "{plan_id}", "k_steps": 2}}"#),
        ),
    )
    .await;
    let (state, state_body) = send(
        router.clone(),
        Request::get("/api/state").body(Body::empty()).unwrap(),
    )
    .await;
    let (embed, embed_body) = send(
        router.clone(),
        post("/api/embed", &traceparent, r#"{"text": "door"}"#),
    )
    .await;
    let (search, search_body) = send(
        router.clone(),
        post(
            "/api/search",
            &traceparent,
            r#"{"text": "door", "top_k": 1}"#,
        ),
    )
    .await;
    let (chat, chat_body) = send(
        router,
        post("/api/chat", &traceparent, r#"{"prompt": "hi"}"#),
    )
    .await;

    assert_eq!(plan, StatusCode::CREATED);
    assert_eq!(simulate, StatusCode::CREATED);
    assert_eq!(state, StatusCode::OK);
    assert!(state_body["state_id"].is_string());
    assert_eq!(embed, StatusCode::OK);
    assert_eq!(embed_body["dimension"], 384);
    assert_eq!(search, StatusCode::OK);
    assert_eq!(search_body["results"].as_array().unwrap().len(), 1);
    assert_eq!(chat, StatusCode::OK);
    assert_eq!(chat_body["choices"][0]["message"]["content"], "hi");
}
