//! What every Sophia route shares: `/health` and `/metrics` (answered, never traced), and JSON
//! 404 and 405 answers.

use axum::body::Body;
use foundry::testing::new_traceparent;
use http::{Request, StatusCode, header::CONTENT_TYPE};
use serde_json::json;

use crate::helpers::{TestApp, assert_error};

#[tokio::test]
async fn health_names_the_service_and_is_not_traced() {
    // Arrange
    let app = TestApp::with_hermes_down();
    let (trace_id, traceparent) = new_traceparent(true);
    let request = Request::get("/health")
        .header("traceparent", &traceparent)
        .body(Body::empty())
        .unwrap();

    // Act
    let response = app.send(request).await;

    // Assert
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(
        response.body,
        json!({"status": "ok", "service": "sophia", "version": env!("CARGO_PKG_VERSION")})
    );
    assert!(app.capture.spans(&trace_id).is_empty());
}

#[tokio::test]
async fn metrics_count_requests_by_route_not_by_path() {
    // Arrange
    let app = TestApp::with_hermes_down();
    let missing = app.get("/hcg/entities/metrics-probe").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);

    // Act
    let response = app.get("/metrics").await;

    // Assert
    assert_eq!(response.status, StatusCode::OK);
    assert!(
        response.headers[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(
        response.text.lines().any(|line| {
            line.starts_with("http_server_request_duration_seconds_count")
                && line.contains("http_route=\"/hcg/entities/{id}\"")
                && line.contains("http_response_status_code=\"404\"")
        }),
        "{}",
        response.text
    );
    assert!(
        !response.text.contains("metrics-probe"),
        "ids stay out of metrics"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    // Arrange
    let app = TestApp::with_hermes_down();

    // Act
    let missing = app.get("/plans").await;
    let wrong_method = app.get("/plan").await;

    // Assert
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found");
    assert_error(
        &wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}
