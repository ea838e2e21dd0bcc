//! Hermes failing under `POST /plan`: down (502 `hermes_unavailable`), slow (504
//! `hermes_timeout`), answering 5xx or garbage (502), or rejecting Sophia's request (also 502:
//! the user's goal is not at fault). Each is bounded in time, leaves the graph untouched, and marks the spans.

use std::time::Duration;

use foundry::testing::{Kind, Status};
use http::StatusCode;
use serde_json::json;

use crate::helpers::{
    GOAL, TestApp, TestResponse, Trace, assert_child_of, assert_error, spawn_fake_hermes,
};

/// Far beyond any answer these tests expect; a hang fails the test instead of blocking the suite.
const GUARD: Duration = Duration::from_secs(20);

async fn plan_within_guard(app: &TestApp) -> (TestResponse, Trace) {
    tokio::time::timeout(
        GUARD,
        app.post_traced("/plan", &json!({"goal": {"description": GOAL}})),
    )
    .await
    .expect("Sophia answered within the guard")
}

#[tokio::test]
async fn hermes_down_is_502_hermes_unavailable() {
    // Arrange
    let app = TestApp::with_hermes_down();

    // Act
    let (response, _) = plan_within_guard(&app).await;

    // Assert
    assert_error(&response, StatusCode::BAD_GATEWAY, "hermes_unavailable");
    let message = response.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("hermes"), "{message}");
    let snapshot = app.get("/hcg/snapshot").await;
    assert_eq!(snapshot.body["entity_count"], 0, "nothing stored");
}

#[tokio::test]
async fn hermes_down_marks_the_client_and_server_spans_as_errors() {
    // Arrange
    let app = TestApp::with_hermes_down();

    // Act
    let (response, trace) = plan_within_guard(&app).await;

    // Assert
    assert_eq!(response.status, StatusCode::BAD_GATEWAY);
    let server = trace.server("POST /plan");
    assert_eq!(server.status, Status::Error);
    assert_eq!(server.int("http.response.status_code"), Some(502));
    assert_eq!(server.str("error.type"), Some("502"));
    let plan = trace.one("sophia.plan");
    assert_child_of(plan, server);
    let call = trace.one_of("POST /simple_nlp", Kind::Client);
    assert_child_of(call, plan);
    assert_eq!(call.status, Status::Error);
    assert_eq!(call.str("error.type"), Some("connect"));
    assert_eq!(call.int("http.response.status_code"), None);
    assert!(
        !trace.has("POST /embed_text") && !trace.has("sophia.hcg.write"),
        "planning stops at the first failure: {:?}",
        trace.described()
    );
}

#[tokio::test]
async fn hermes_slower_than_the_timeout_is_504_hermes_timeout() {
    // Arrange
    let slow = spawn_fake_hermes(StatusCode::OK, "{}", Duration::from_secs(60)).await;
    let app = TestApp::against(&slow, Duration::from_millis(200), None);

    // Act
    let (response, trace) = plan_within_guard(&app).await;

    // Assert
    assert_error(&response, StatusCode::GATEWAY_TIMEOUT, "hermes_timeout");
    let server = trace.server("POST /plan");
    assert_eq!(server.status, Status::Error);
    assert_eq!(server.int("http.response.status_code"), Some(504));
    let call = trace.one_of("POST /simple_nlp", Kind::Client);
    assert_child_of(call, trace.one("sophia.plan"));
    assert_eq!(call.status, Status::Error);
    assert_eq!(call.str("error.type"), Some("timeout"));
}

#[tokio::test]
async fn a_hermes_server_error_is_502_and_marks_the_client_span() {
    // Arrange
    let failing = spawn_fake_hermes(
        StatusCode::INTERNAL_SERVER_ERROR,
        r#"{"error": {"code": "boom", "message": "it broke"}}"#,
        Duration::ZERO,
    )
    .await;
    let app = TestApp::against(&failing, Duration::from_secs(10), None);

    // Act
    let (response, trace) = plan_within_guard(&app).await;

    // Assert
    assert_error(&response, StatusCode::BAD_GATEWAY, "hermes_unavailable");
    let call = trace.one_of("POST /simple_nlp", Kind::Client);
    assert_eq!(call.int("http.response.status_code"), Some(500));
    assert_eq!(call.status, Status::Error);
    assert_eq!(call.str("error.type"), Some("500"));
}

#[tokio::test]
async fn a_hermes_answer_outside_the_contract_is_502() {
    // Arrange
    let garbled = spawn_fake_hermes(StatusCode::OK, "[1, 2, 3]", Duration::ZERO).await;
    let app = TestApp::against(&garbled, Duration::from_secs(10), None);

    // Act
    let (response, _) = plan_within_guard(&app).await;

    // Assert
    assert_error(&response, StatusCode::BAD_GATEWAY, "hermes_unavailable");
}

#[tokio::test]
async fn a_hermes_client_error_is_a_bad_gateway_naming_hermes() {
    // Arrange: Sophia's own request to Hermes was refused, e.g. HERMES_URL names another
    // service; the user's goal is not at fault.
    let rejecting = spawn_fake_hermes(
        StatusCode::UNPROCESSABLE_ENTITY,
        r#"{"error": {"code": "text_too_long", "message": "text is too long"}}"#,
        Duration::ZERO,
    )
    .await;
    let app = TestApp::against(&rejecting, Duration::from_secs(10), None);

    // Act
    let (response, trace) = plan_within_guard(&app).await;

    // Assert
    assert_error(&response, StatusCode::BAD_GATEWAY, "hermes_unavailable");
    assert!(
        response.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("hermes answered 422 Unprocessable Entity: text is too long"),
        "{}",
        response.body
    );
    assert_eq!(trace.server("POST /plan").status, Status::Error);
}
