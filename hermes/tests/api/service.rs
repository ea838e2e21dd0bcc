//! What every Hermes route shares: `/health` and `/metrics` (answered, never traced), JSON 404,
//! 405 and 415 answers, and the `traceparent` that comes back on a traced response.

use axum::body::Body;
use foundry::testing::new_traceparent;
use http::{Request, StatusCode, header::CONTENT_TYPE};
use serde_json::json;

use crate::helpers::{TestApp, assert_error, json_request};

#[tokio::test]
async fn health_names_the_service_and_is_not_traced() {
    // Arrange
    let app = TestApp::new();
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
        json!({"status": "ok", "service": "hermes", "version": env!("CARGO_PKG_VERSION")})
    );
    assert!(app.capture.spans(&trace_id).is_empty());
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_the_request_histogram_by_route() {
    // Arrange
    let app = TestApp::new();
    let embedded = app.post("/embed_text", &json!({"text": "count me"})).await;
    assert_eq!(embedded.status, StatusCode::OK);

    // Act
    let response = app.get("/metrics").await;

    // Assert
    assert_eq!(response.status, StatusCode::OK);
    assert!(
        response.headers[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain"),
        "{:?}",
        response.headers
    );
    let line = response
        .text
        .lines()
        .find(|line| {
            line.starts_with("http_server_request_duration_seconds_count")
                && line.contains("http_route=\"/embed_text\"")
                && line.contains("http_response_status_code=\"200\"")
        })
        .unwrap_or_else(|| panic!("no /embed_text count in\n{}", response.text));
    let count: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(count >= 1.0, "{line}");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    // Arrange
    let app = TestApp::new();

    // Act
    let missing = app.post("/embed", &json!({"text": "x"})).await;
    let wrong_method = app.get("/embed_text").await;

    // Assert
    assert_error(&missing, StatusCode::NOT_FOUND, "not_found");
    assert_error(
        &wrong_method,
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
    );
}

#[tokio::test]
async fn a_body_without_a_json_content_type_is_415_on_every_route() {
    // Arrange
    let app = TestApp::new();

    for path in ["/embed_text", "/search", "/simple_nlp", "/llm"] {
        let request = Request::post(path)
            .header(CONTENT_TYPE, "text/plain")
            .body(Body::from("{\"text\": \"x\"}"))
            .unwrap();

        // Act
        let response = app.send(request).await;

        // Assert
        assert_error(
            &response,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        );
    }
}

#[tokio::test]
async fn a_traced_response_carries_the_server_span_in_its_traceparent() {
    // Arrange
    let app = TestApp::new();
    let (trace_id, traceparent) = new_traceparent(true);
    let body = json!({"text": "x", "operations": ["tokenize"]}).to_string();

    // Act
    let response = app
        .send(json_request("/simple_nlp", body, Some(&traceparent)))
        .await;

    // Assert
    let spans = app.capture.spans(&trace_id);
    let server = spans.iter().find(|s| s.name == "POST /simple_nlp").unwrap();
    assert_eq!(
        response.headers["traceparent"],
        format!("00-{trace_id}-{}-01", server.span_id).as_str()
    );
}
