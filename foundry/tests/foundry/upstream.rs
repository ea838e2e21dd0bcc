//! Why foundry's server layer is kept beside the library it would otherwise be: the same requests
//! through `foundry::http::instrument` and through axum-tracing-opentelemetry's layers, and what
//! each server span breaks of the HTTP semantic conventions. When an upgrade of the upstream
//! layer fixes these, this test fails, and the layer can be weighed again by its cost alone
//! (BENCHMARKS.md, "What each hand-written part saves").

use axum::{Router, body::Body, routing::get};
use foundry::testing::{AttributeValue, Kind, ReceivedSpan, new_traceparent};
use http::{Request, StatusCode};
use tower::ServiceExt;

fn routes() -> Router {
    Router::new().route(
        "/fail",
        get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "no") }),
    )
}

/// What `span`, the server span of a `GET /fail` answered 500 with no `User-Agent`, breaks of
/// the conventions.
fn broken_conventions(span: &ReceivedSpan) -> Vec<&'static str> {
    let mut broken = Vec::new();
    if span.str("url.scheme").is_none_or(str::is_empty) {
        broken.push("url.scheme is missing or empty");
    }
    if span.str("error.type").is_none() {
        broken.push("a 500 has no error.type");
    }
    if span
        .attributes
        .get("user_agent.original")
        .is_some_and(|value| *value == AttributeValue::String(String::new()))
    {
        broken.push("user_agent.original is empty where there is no User-Agent");
    }
    if span.attributes.contains_key("span.type") {
        broken.push("span.type is no HTTP convention");
    }
    if span.int("http.response.status_code") != Some(500) {
        broken.push("http.response.status_code is not the integer 500");
    }
    broken
}

#[tokio::test]
async fn the_upstream_server_layer_breaks_conventions_that_foundry_s_keeps() {
    let capture = foundry::testing::capture("foundry-test");
    let upstream = routes()
        .layer(axum_tracing_opentelemetry::middleware::OtelInResponseLayer)
        .layer(axum_tracing_opentelemetry::middleware::OtelAxumLayer::default());
    let layers = [
        (
            "foundry",
            foundry::http::instrument(routes(), "foundry-test", "0.0.0"),
        ),
        ("upstream", upstream),
    ];
    let mut broken = Vec::new();
    for (name, router) in layers {
        // Arrange
        let (trace_id, traceparent) = new_traceparent(true);

        // Act
        let response = router
            .oneshot(
                Request::get("/fail")
                    .header("host", "localhost:47000")
                    .header("traceparent", traceparent)
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();

        // Assert
        assert_eq!(
            response.status(),
            StatusCode::INTERNAL_SERVER_ERROR,
            "{name}"
        );
        let spans = capture.spans(&trace_id);
        let servers: Vec<&ReceivedSpan> = spans
            .iter()
            .filter(|span| span.kind == Kind::Server)
            .collect();
        let [server] = servers[..] else {
            panic!("{name}: one server span, got {spans:#?}");
        };
        broken.push((name, broken_conventions(server)));
    }
    assert_eq!(
        broken,
        [
            ("foundry", vec![]),
            (
                "upstream",
                vec![
                    "url.scheme is missing or empty",
                    "a 500 has no error.type",
                    "user_agent.original is empty where there is no User-Agent",
                    "span.type is no HTTP convention",
                ]
            ),
        ]
    );
}
