//! `/openapi.json`: Apollo's document lists every route of its router but the gRPC ones, and
//! nothing else.

use std::collections::BTreeSet;

use apollo::diagnostics::receiver::GRPC_PATH_PREFIX;
use foundry::testing::{Route, document_routes, router_routes, served_document};

fn router() -> axum::Router {
    // Nowhere to forward to: the probes carry no body, so no action gets that far, but GET
    // /api/state tries and gets its 502.
    let closed = crate::support::closed_url();
    let services =
        apollo::services::Services::new(&closed, &closed, None, std::time::Duration::from_secs(1))
            .unwrap();
    apollo::app::router(
        services,
        apollo::diagnostics::Diagnostics::new(1000),
        apollo::routes::diagnostics::Links::default(),
    )
}

#[tokio::test]
async fn the_document_lists_every_route_but_grpc_and_nothing_else() {
    // Arrange
    let router = router();

    // Act
    let document = served_document(&router).await;
    let documented = document_routes(&document);
    let (grpc, routed): (BTreeSet<Route>, BTreeSet<Route>) = router_routes(&router)
        .await
        .into_iter()
        .partition(|(_, path)| path.starts_with(GRPC_PATH_PREFIX));

    // Assert
    assert_eq!(document["info"]["title"], "apollo");
    assert_eq!(
        routed, documented,
        "left: the router's routes (gRPC left out); right: the document's"
    );
    let grpc_paths: BTreeSet<&str> = grpc.iter().map(|(_, path)| path.as_str()).collect();
    assert_eq!(
        grpc_paths,
        BTreeSet::from([
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
            "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        ])
    );
    for path in [
        "/api/plan",
        "/api/diagnostics/traces/{trace_id}",
        "/ws/diagnostics",
        "/diagnostics",
        "/diagnostics/app.js",
        "/diagnostics/app.css",
        "/favicon.ico",
        "/v1/traces",
        "/v1/metrics",
        "/v1/logs",
        "/health",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(documented.iter().any(|(_, p)| p == path), "{path}");
    }
}

#[tokio::test]
async fn a_get_of_the_websocket_without_an_upgrade_is_a_json_error() {
    // Arrange
    let router = router();
    let request = http::Request::get("/ws/diagnostics")
        .body(axum::body::Body::empty())
        .unwrap();

    // Act
    let response = foundry::testing::TestResponse::of(&router, request).await;

    // Assert
    foundry::testing::assert_error(
        &response,
        http::StatusCode::BAD_REQUEST,
        "websocket_upgrade_required",
    );
}
