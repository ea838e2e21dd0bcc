//! The server layer, asserted through foundry's in-process span capture.

use axum::{Router, body::Body, routing::get};
use foundry::testing::{Kind, Status, capture, new_traceparent};
use http::{Request, StatusCode};
use tower::ServiceExt;

fn app() -> Router {
    let routes = Router::new()
        .route("/items/{id}", get(|| async { "an item" }))
        .route(
            "/fail",
            get(|| async {
                foundry::http::ErrorResponse::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "boom",
                    "it broke",
                )
            }),
        );
    foundry::http::instrument(routes, "foundry-test", "0.0.0")
}

async fn get_with(uri: &str, traceparent: Option<&str>) -> http::Response<Body> {
    let mut request = Request::get(uri)
        .header("host", "sophia.local:47000")
        .header("user-agent", "foundry-tests");
    if let Some(traceparent) = traceparent {
        request = request.header("traceparent", traceparent);
    }
    app()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap()
}

#[tokio::test]
async fn server_span_has_the_conventional_name_kind_and_typed_attributes() {
    // Arrange
    let capture = capture("foundry-test");
    let (trace_id, traceparent) = new_traceparent(true);

    // Act
    let response = get_with("/items/42?verbose=1", Some(&traceparent)).await;

    // Assert
    assert_eq!(response.status(), StatusCode::OK);
    let spans = capture.spans(&trace_id);
    assert_eq!(spans.len(), 1, "{spans:#?}");
    let span = &spans[0];
    assert_eq!(span.name, "GET /items/{id}");
    assert_eq!(span.kind, Kind::Server);
    assert_eq!(span.service_name, "foundry-test");
    assert_eq!(span.str("http.route"), Some("/items/{id}"));
    assert_eq!(span.str("url.path"), Some("/items/42"));
    assert_eq!(span.str("http.request.method"), Some("GET"));
    assert_eq!(span.int("http.response.status_code"), Some(200));
    assert_eq!(span.str("server.address"), Some("sophia.local"));
    assert_eq!(span.int("server.port"), Some(47000));
    assert_eq!(span.str("user_agent.original"), Some("foundry-tests"));
    assert_eq!(span.status, Status::Unset);
    for noise in [
        "code.file.path",
        "thread.id",
        "busy_ns",
        "idle_ns",
        "span.type",
        "target",
    ] {
        assert!(
            !span.attributes.contains_key(noise),
            "{noise} leaked: {span:#?}"
        );
    }
}

#[tokio::test]
async fn incoming_traceparent_is_the_parent_and_comes_back_on_the_response() {
    let capture = capture("foundry-test");
    let (trace_id, traceparent) = new_traceparent(true);
    let parent_span_id = &traceparent[36..52];

    let response = get_with("/items/1", Some(&traceparent)).await;

    let spans = capture.spans(&trace_id);
    assert_eq!(spans.len(), 1);
    assert_eq!(spans[0].parent_span_id, parent_span_id);
    let returned = response.headers()["traceparent"].to_str().unwrap();
    assert_eq!(returned, format!("00-{trace_id}-{}-01", spans[0].span_id));
    assert!(
        response.headers().get("tracestate").is_none(),
        "no empty tracestate header"
    );
}

#[tokio::test]
async fn malformed_traceparent_starts_a_new_trace_without_error() {
    let capture = capture("foundry-test");
    let malformed = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-junk";

    let response = get_with("/items/7", Some(malformed)).await;

    assert_eq!(response.status(), StatusCode::OK);
    let returned = response.headers()["traceparent"]
        .to_str()
        .unwrap()
        .to_owned();
    let new_trace_id = &returned[3..35];
    assert_ne!(new_trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    let spans = capture.spans(new_trace_id);
    assert_eq!(spans.len(), 1);
    assert!(spans[0].is_root(), "a new root: {:?}", spans[0]);
    assert!(capture.spans("4bf92f3577b34da6a3ce929d0e0e4736").is_empty());
}

#[tokio::test]
async fn server_errors_set_status_error() {
    let capture = capture("foundry-test");
    let (trace_id, traceparent) = new_traceparent(true);

    let response = get_with("/fail", Some(&traceparent)).await;

    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let spans = capture.spans(&trace_id);
    assert_eq!(spans[0].status, Status::Error);
    assert_eq!(spans[0].int("http.response.status_code"), Some(500));
    assert_eq!(spans[0].str("error.type"), Some("500"));
}

#[tokio::test]
async fn unsampled_parent_records_nothing_but_still_propagates() {
    let capture = capture("foundry-test");
    let (trace_id, traceparent) = new_traceparent(false);

    let (control_id, control) = new_traceparent(true);

    let response = get_with("/items/3", Some(&traceparent)).await;
    let _ = get_with("/items/3", Some(&control)).await;

    assert_eq!(capture.spans(&control_id).len(), 1, "the capture works");
    assert!(capture.spans(&trace_id).is_empty());
    let returned = response.headers()["traceparent"].to_str().unwrap();
    assert!(returned.starts_with(&format!("00-{trace_id}-")) && returned.ends_with("-00"));
}

#[tokio::test]
async fn health_and_metrics_are_untraced_and_metrics_has_the_request_histogram() {
    let capture = capture("foundry-test");
    let (trace_id, traceparent) = new_traceparent(true);
    let _ = get_with("/items/9", None).await;

    let (control_id, control) = new_traceparent(true);
    let health = get_with("/health", Some(&traceparent)).await;
    let metrics = get_with("/metrics", Some(&traceparent)).await;
    let _ = get_with("/items/10", Some(&control)).await;
    assert_eq!(capture.spans(&control_id).len(), 1, "the capture works");

    assert_eq!(health.status(), StatusCode::OK);
    let body = axum::body::to_bytes(health.into_body(), 1 << 20)
        .await
        .unwrap();
    let health: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["service"], "foundry-test");
    assert!(
        capture.spans(&trace_id).is_empty(),
        "health and metrics untraced"
    );
    let body = axum::body::to_bytes(metrics.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert!(
        text.contains("http_server_request_duration_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("http_route=\"/items/{id}\""), "{text}");
}

#[tokio::test]
async fn errors_are_json_with_a_code() {
    let cases = [
        (
            Request::get("/nowhere").body(Body::empty()).unwrap(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Request::post("/items/1").body(Body::empty()).unwrap(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
    ];
    for (request, status, code) in cases {
        let response = app().oneshot(request).await.unwrap();
        assert_eq!(response.status(), status);
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], code, "{body}");
    }
}

#[tokio::test]
async fn a_request_that_outlives_its_timeout_is_abandoned_with_a_json_503() {
    let capture = capture("foundry-test");
    let (trace_id, traceparent) = new_traceparent(true);
    let app = Router::new()
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(std::time::Duration::from_secs(30)).await;
                "too late"
            }),
        )
        .layer(
            foundry::http::ServerLayer::new()
                .with_request_timeout(std::time::Duration::from_millis(50)),
        );

    let response = app
        .oneshot(
            Request::get("/slow")
                .header("traceparent", &traceparent)
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();

    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(body["error"]["code"], "timeout");
    let spans = capture.spans(&trace_id);
    assert_eq!(spans[0].status, Status::Error);
    assert_eq!(spans[0].int("http.response.status_code"), Some(503));
}
