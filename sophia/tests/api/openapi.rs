//! `/openapi.json`: Sophia's document lists every route of its router, and nothing else.

use std::time::Duration;

use foundry::testing::{document_routes, router_routes, served_document};

fn router(token: Option<&str>) -> axum::Router {
    // Nothing here reaches Hermes: the probes carry no body, so no handler gets that far.
    let state = sophia::app::AppState::new("http://127.0.0.1:9", Duration::from_secs(1))
        .unwrap()
        .with_api_token(token.map(str::to_owned));
    sophia::app::router(state)
}

#[tokio::test]
async fn the_document_lists_every_route_and_nothing_else() {
    // Arrange
    let router = router(None);

    // Act
    let document = served_document(&router).await;
    let documented = document_routes(&document);
    let routed = router_routes(&router).await;

    // Assert
    assert_eq!(document["openapi"], "3.1.0");
    assert_eq!(document["info"]["title"], "sophia");
    assert_eq!(
        routed, documented,
        "left: the router's routes; right: the document's"
    );
    for route in [
        "/plan",
        "/simulate",
        "/state",
        "/hcg/entities",
        "/hcg/entities/{id}",
        "/hcg/snapshot",
        "/health",
        "/metrics",
        "/openapi.json",
    ] {
        assert!(documented.iter().any(|(_, path)| path == route), "{route}");
    }
}

#[tokio::test]
async fn the_routes_behind_the_token_document_its_401() {
    // Arrange
    let router = router(Some("secret"));
    let request = http::Request::get("/openapi.json")
        .header(http::header::AUTHORIZATION, "Bearer secret")
        .body(axum::body::Body::empty())
        .unwrap();

    // Act
    let document = foundry::testing::TestResponse::of(&router, request)
        .await
        .body;

    // Assert
    let paths = &document["paths"];
    assert!(paths["/plan"]["post"]["responses"]["401"].is_object());
    assert!(paths["/hcg/entities/{id}"]["get"]["responses"]["401"].is_object());
    assert!(paths["/openapi.json"]["get"]["responses"]["401"].is_object());
    assert!(paths["/health"]["get"]["responses"]["401"].is_null());
    assert!(paths["/metrics"]["get"]["responses"]["401"].is_null());
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}
