//! What every Hermes route shares: `/health` and `/metrics` (answered, never traced), JSON 404,
//! 405 and 415 answers, and the `traceparent` that comes back on a traced response.

use axum::body::Body;
use http::{Request, StatusCode, header::CONTENT_TYPE};
use serde_json::json;

use crate::helpers::{TestApp, assert_error};

#[tokio::test]
async fn health_names_the_service_and_is_not_traced() {
    TestApp::new()
        .assert_health(env!("CARGO_PKG_VERSION"))
        .await;
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_the_request_histogram_by_route() {
    // Arrange
    let app = TestApp::new();
    let embedded = app.post("/embed_text", &json!({"text": "count me"})).await;
    assert_eq!(embedded.status, StatusCode::OK);

    // Act
    let (text, count) = app.request_count("/embed_text", 200).await;

    // Assert
    assert!(count >= 1.0, "{text}");
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_in_the_error_shape() {
    TestApp::new()
        .assert_unknown_route_and_method("/embed", "/embed_text")
        .await;
}

/// Posts a small JSON text to `path` with a content type and perhaps an encoding, and asserts
/// the 415 with `code`.
async fn assert_415(
    app: &TestApp,
    path: &str,
    (content_type, encoding): (&str, Option<&str>),
    code: &str,
) {
    let mut request = Request::post(path).header(CONTENT_TYPE, content_type);
    if let Some(encoding) = encoding {
        request = request.header("content-encoding", encoding);
    }
    let response = app
        .send(request.body(Body::from("{\"text\": \"x\"}")).unwrap())
        .await;
    assert_error(&response, StatusCode::UNSUPPORTED_MEDIA_TYPE, code);
}

#[tokio::test]
async fn a_body_without_a_json_content_type_is_415_on_every_route() {
    // Arrange
    let app = TestApp::new();

    for path in ["/embed_text", "/search", "/simple_nlp", "/llm"] {
        // Act / Assert
        assert_415(&app, path, ("text/plain", None), "unsupported_media_type").await;
    }
}

#[tokio::test]
async fn a_body_with_a_content_encoding_is_415_on_every_route() {
    // Arrange
    let app = TestApp::new();

    for (path, encoding) in [
        ("/embed_text", "gzip"),
        ("/search", "br"),
        ("/llm", "deflate"),
    ] {
        // Act / Assert
        let headers = ("application/json", Some(encoding));
        assert_415(&app, path, headers, "unsupported_encoding").await;
    }
}

#[tokio::test]
async fn a_traced_response_carries_the_server_span_in_its_traceparent() {
    // Arrange
    let app = TestApp::new();
    let body = json!({"text": "x", "operations": ["tokenize"]});

    // Act
    let (response, trace) = app.post_traced("/simple_nlp", &body).await;

    // Assert
    let server = trace.server("POST /simple_nlp");
    assert_eq!(
        response.headers["traceparent"],
        format!("00-{}-{}-01", server.trace_id, server.span_id).as_str()
    );
}
