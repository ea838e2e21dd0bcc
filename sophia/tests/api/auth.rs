//! The bearer token: with one set, every route but `/health` and `/metrics` answers 401
//! `unauthorized` without it, and the token never reaches a span attribute.

use axum::body::Body;
use foundry::testing::{AttributeValue, Kind, Status, new_traceparent};
use http::{Request, StatusCode, header::AUTHORIZATION};
use serde_json::json;

use crate::helpers::{GOAL, TestApp, assert_error, json_post};

const TOKEN: &str = "s3cret";

fn protected_requests() -> Vec<Request<Body>> {
    let post = |path: &str, body: &str| json_post(path).body(Body::from(body.to_owned())).unwrap();
    let get = |path: &str| Request::get(path).body(Body::empty()).unwrap();
    vec![
        post("/plan", r#"{"goal": {"description": "open the door"}}"#),
        post("/simulate", r#"{"plan_id": "x"}"#),
        post("/state", r#"{"state": {}}"#),
        // Authorisation comes before the body is read.
        post("/state", "not json"),
        get("/state"),
        get("/hcg/entities"),
        get("/hcg/entities/some-id"),
        get("/hcg/snapshot?limit=1"),
    ]
}

#[tokio::test]
async fn every_route_needs_the_token() {
    // Arrange
    let app = TestApp::with_hermes_and_token(TOKEN).await;

    for request in protected_requests() {
        let path = request.uri().to_string();

        // Act
        let response = app.send(request).await;

        // Assert
        assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_error(&response, StatusCode::UNAUTHORIZED, "unauthorized");
        assert_eq!(
            response.headers["www-authenticate"], "Bearer realm=\"sophia\"",
            "the challenge a 401 carries"
        );
    }
}

#[tokio::test]
async fn a_wrong_or_malformed_token_is_401() {
    // Arrange
    let app = TestApp::with_hermes_and_token(TOKEN).await;
    let headers = [
        "Bearer nope",
        "Bearer s3cret2",
        "Bearer s3cre",
        "Basic s3cret",
        "Bearers3cret",
        "s3cret",
        "Bearer ",
    ];

    for header in headers {
        let request = Request::get("/state")
            .header(AUTHORIZATION, header)
            .body(Body::empty())
            .unwrap();

        // Act
        let response = app.send(request).await;

        // Assert
        assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{header:?}");
        assert_error(&response, StatusCode::UNAUTHORIZED, "unauthorized");
    }
}

#[tokio::test]
async fn the_right_token_is_let_through() {
    // Arrange
    let app = TestApp::with_hermes_and_token(TOKEN).await;

    // The scheme's name is case-insensitive (RFC 9110).
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let request = Request::get("/state")
            .header(AUTHORIZATION, format!("{scheme} {TOKEN}"))
            .body(Body::empty())
            .unwrap();

        // Act
        let response = app.send(request).await;

        // Assert
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{scheme}: {}",
            response.text
        );
        assert_eq!(response.body["state"], json!({}));
    }
}

#[tokio::test]
async fn health_and_metrics_need_no_token() {
    // Arrange
    let app = TestApp::with_hermes_and_token(TOKEN).await;

    // Act
    let health = app.get("/health").await;
    let metrics = app.get("/metrics").await;

    // Assert
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.body["status"], "ok");
    assert_eq!(metrics.status, StatusCode::OK);
}

#[tokio::test]
async fn an_empty_token_means_no_token() {
    // Arrange
    let app = TestApp::against(
        &crate::helpers::closed_port_url(),
        std::time::Duration::from_secs(1),
        Some(""),
    );

    // Act
    let response = app.get("/state").await;

    // Assert
    assert_eq!(response.status, StatusCode::OK, "{}", response.text);
}

#[tokio::test]
async fn a_refused_request_is_traced_as_401_without_error_status() {
    // Arrange
    let app = TestApp::with_hermes_and_token(TOKEN).await;

    // Act
    let (response, trace) = app
        .send_traced(
            Request::get("/state").header(AUTHORIZATION, "Bearer nope"),
            Body::empty(),
        )
        .await;

    // Assert
    assert_error(&response, StatusCode::UNAUTHORIZED, "unauthorized");
    let server = trace.server("GET /state");
    assert_eq!(server.int("http.response.status_code"), Some(401));
    assert_eq!(server.status, Status::Unset);
    assert!(!trace.has("sophia.state.read"), "{:?}", trace.described());
}

#[tokio::test]
async fn the_token_never_appears_in_any_span_of_the_trace() {
    // Arrange
    let app = TestApp::with_hermes_and_token(TOKEN).await;
    let (trace_id, traceparent) = new_traceparent(true);
    let request = json_post("/plan")
        .header("traceparent", &traceparent)
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
        .body(Body::from(
            json!({"goal": {"description": GOAL}}).to_string(),
        ))
        .unwrap();

    // Act
    let response = app.send(request).await;

    // Assert
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text);
    let spans = app.capture.spans(&trace_id);
    // The whole chain is there: Sophia's server, manual and client spans, and Hermes' spans.
    assert!(spans.iter().any(|s| s.kind == Kind::Client), "{spans:#?}");
    assert_eq!(
        spans.iter().filter(|s| s.kind == Kind::Server).count(),
        5,
        "Sophia's and four in Hermes"
    );
    for span in &spans {
        for (key, value) in &span.attributes {
            let text = match value {
                AttributeValue::String(text) => text.clone(),
                other => format!("{other:?}"),
            };
            assert!(
                !text.contains(TOKEN),
                "{key} of {} holds the token: {text}",
                span.name
            );
            assert!(!key.to_ascii_lowercase().contains("authorization"), "{key}");
        }
    }
}
